"""
Classroom exercises for nanoDFT, each with an automatic checker (exercises/README.md: objectives, syllabus, hints).

    python -m exercises.check --list                        # the exercises, in course order
    python -m exercises.check --smoke                       # is this machine ready for the course?
    python -m exercises.check dpo                           # check losses.dpo_loss where it is
    python -m exercises.check dpo --template > my_dpo.py    # a starting file to fill in
    python -m exercises.check dpo --impl my_dpo.py          # check your own file
    python -m exercises.student out/student                 # the student edition: exercises stubbed, no answers
    python -m exercises.grade submissions/                  # grade a class (teacher's copy: exercises/teacher/)
    python -m pytest -q tests/test_exercises.py tests/test_grading.py
"""
