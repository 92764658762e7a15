"""
Classroom exercises for nanoDFT, each with an automatic checker (exercises/README.md has the list).

    python -m exercises.check --list                        # the exercises
    python -m exercises.check dpo --template > my_dpo.py    # a starting file to fill in
    python -m exercises.check dpo --impl my_dpo.py          # check your answer
    python -m exercises.check dpo                           # check the project's own code (the reference)
    python -m pytest -q tests/test_exercises.py             # every checker passes the reference and fails wrong answers
"""
