"""
The teacher's part of the course: what a student's copy must not hold. One module per exercise
(exercises/teacher/NAME.py) with the references that compute expected outputs for any input
(`expected(case)`), the cases the grader adds (`checks`), the answer keys of the question exercises
and the rubric points of their written answers; ref.py holds the float64 helpers they share.

    python -m exercises.teacher.make_cases        # exercises/cases/*.json, from the references
    python -m exercises.check dpo                 # the full checks: public + teacher + keys
    python -m exercises.grade SUBMISSIONS         # grade a class (exercises/teacher/README.md)

The student edition (python -m exercises.student) leaves this folder out, and the grader loads it
from the teacher's copy under a private name, out of reach of the answers it grades.
"""
