"""
Write the public cases, exercises/cases/NAME.json, from the teacher's references: for every exercise
whose teacher part lists PUBLIC cases, each case's inputs with "want", its expected outputs and what
the usual mistakes give. A student's copy checks against these files; it never sees the references.

    python -m exercises.teacher.make_cases          # all of them
    python -m exercises.teacher.make_cases --check  # exit 1 if a file is out of date (a test
                                                    # runs this)

Rerun it after changing a reference or a case, or after a torch upgrade that changes its random
numbers (cases built from a seed); tests/test_exercises.py fails while a file is stale.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "python -m exercises.teacher.make_cases wrote these public cases; do not edit them"


def content(name):
    """The JSON text of exercises/cases/NAME.json, or None when the exercise has no public cases."""
    from exercises.check import teacher_part
    tp = teacher_part(name)
    if tp is None or not getattr(tp, "PUBLIC", None):
        return None
    cases = [{**c, "want": tp.expected(c)} for c in tp.PUBLIC]
    lines = ",\n".join(wrapped(c) for c in cases)  # a case to a paragraph: readable diffs
    return (f'{{"exercise": "{name}",\n "about": {json.dumps(HEADER.format(name=name))},\n'
            f' "cases": [\n{lines}\n]}}\n')


def wrapped(obj, width=100, indent="   "):
    """obj as JSON in lines of at most `width` columns, broken after a comma between items (never
    inside a string, so a long string stays whole)."""
    text, pieces, start, in_string, escaped = json.dumps(obj), [], 0, False, False
    for k, ch in enumerate(text):
        if in_string:
            in_string, escaped = (ch != '"' or escaped), (ch == "\\" and not escaped)
        elif ch == '"':
            in_string = True
        elif ch == "," and text[k + 1:k + 2] == " ":
            pieces.append(text[start:k + 1])
            start = k + 2
    pieces.append(text[start:])
    lines, line = [], "  " + pieces[0]
    for piece in pieces[1:]:
        if len(line) + 1 + len(piece) > width:
            lines.append(line)
            line = indent + piece
        else:
            line += " " + piece
    return "\n".join(lines + [line])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m exercises.teacher.make_cases",
                                description="Write exercises/cases/*.json from the references.")
    p.add_argument("--check", action="store_true", help="only check that every file is up to date")
    args = p.parse_args(argv)
    from exercises.check import ORDER
    stale = []
    for name in ORDER:
        text = content(name)
        path = os.path.join(HERE, "cases", f"{name}.json")
        if text is None:
            continue
        old = open(path).read() if os.path.exists(path) else None
        if old != text:
            stale.append(name)
            if not args.check:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write(text)
    verb = "out of date" if args.check else "written"
    print(f"{verb}: {', '.join(stale) or 'none'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
