"""
While the grader runs a student's answer (python -m exercises.grade), the answer's own code may
not import the course's modules (exercises, exercises.*), open the course's files, or start
programs. The grader's static reading of the answer (exercises/grade.py, audit) catches the plain
forms; this guard makes them fail at run time too, whatever form they take, and records each
attempt so the grader can give the exercise 0 with the reason.

"The answer's own code" is any frame whose code comes from a student's file (the project modules
the grader put their functions in, exercises/yours/*.py) or from code built at run time (exec,
eval). The checkers, the project and the libraries run unhindered, even when the answer calls them.

    guard = Guard(student_files, forbidden=[copy/exercises, teacher's copy],
                  allowed=[copy, copy/exercises/yours])
    guard.install()     # for the rest of the process; guard.violations lists the attempts
    from_env()          # in a process a checker starts: the same guard, from NANODFT_GUARD
"""
import builtins
import importlib
import json
import os
import sys

MARK = "not available to answers while grading"  # in every refusal: the grader looks for it
ENV = "NANODFT_GUARD"
COURSE = "exercises"
SPAWN_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                "pty.spawn")


def _real(p):
    return os.path.realpath(p)


class Guard:
    def __init__(self, student_files, forbidden=(), allowed=()):
        self.student = {_real(p) for p in student_files}
        self.forbidden = [_real(d) for d in forbidden]
        self.allowed = [_real(d) for d in allowed]
        # the longest folder that holds a path decides: copy/exercises/yours (allowed) over
        # copy/exercises (forbidden) over the copy itself (allowed) over the teacher's copy
        rules = [(d, False) for d in self.forbidden] + [(d, True) for d in self.allowed]
        self.rules = sorted(rules, key=lambda r: -len(r[0]))
        self.violations = []
        self._import, self._import_module = builtins.__import__, importlib.import_module
        self._busy = False

    def spec(self):
        return {"student": sorted(self.student), "forbidden": self.forbidden,
                "allowed": self.allowed}

    # -- whose code is this?

    def answer_code(self, filename):
        if filename.startswith("<") and not filename.startswith("<frozen"):
            return True  # code built at run time: exec, eval, compile
        return _real(filename) in self.student

    def answer_on_stack(self, frame):
        while frame is not None:
            if self.answer_code(frame.f_code.co_filename):
                return True
            frame = frame.f_back
        return False

    def refuse(self, what, exc=ImportError):
        self.violations.append(what)
        raise exc(f"{what}: the course's modules and files are {MARK}")

    # -- the hooks

    def guarded_import(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and (name == COURSE or name.startswith(COURSE + ".")):
            if self.answer_code(sys._getframe(1).f_code.co_filename):
                self.refuse(f"import {name}")
        elif level > 0 and globals and str(globals.get("__package__") or "").startswith(COURSE):
            if self.answer_code(sys._getframe(1).f_code.co_filename):
                self.refuse(f"a relative import ({'.' * level}{name})")
        return self._import(name, globals, locals, fromlist, level)

    def guarded_import_module(self, name, package=None):
        if (name == COURSE or name.startswith(COURSE + ".") or name.startswith(".")) and \
                self.answer_code(sys._getframe(1).f_code.co_filename):
            self.refuse(f"importlib.import_module({name!r})")
        return self._import_module(name, package)

    def forbidden_path(self, path):
        p = _real(path)
        for folder, allowed in self.rules:
            if p == folder or p.startswith(folder + os.sep):
                return not allowed
        return False

    def audit(self, event, args):
        if self._busy or not (event == "open" or event.startswith(SPAWN_EVENTS)):
            return
        self._busy = True  # the frames we read below raise audit events of their own
        try:
            if event == "open":
                path = args[0]
                named = isinstance(path, (str, bytes, os.PathLike))
                if named and self.forbidden_path(os.fsdecode(path)) and \
                        self.answer_on_stack(sys._getframe(1)):
                    self.refuse(f"open({os.path.basename(os.fsdecode(path))!r})", PermissionError)
            elif self.answer_on_stack(sys._getframe(1)):
                self.refuse(f"starting a program ({event})", PermissionError)
        finally:
            self._busy = False

    def install(self):
        builtins.__import__ = self.guarded_import
        importlib.import_module = self.guarded_import_module
        importlib.__import__ = self.guarded_import
        sys.addaudithook(self.audit)
        os.environ[ENV] = json.dumps(self.spec())  # processes the checkers start guard themselves
        return self


def from_env():
    """Install the guard described by NANODFT_GUARD, if the grader set it; returns it or None."""
    spec = os.environ.get(ENV)
    if not spec:
        return None
    s = json.loads(spec)
    return Guard(s["student"], s["forbidden"], s["allowed"]).install()
