"""
The built-in default task: multi-step arithmetic word problems (a classroom-sized cousin of GSM8K).

Each problem is a short story with 2 or 3 steps (+, -, and now and then * by 2-5) and a question;
the worked answer writes one equation per step and ends with "The answer is N.":

    prompt:   "Question: Mia has 7 apples. She buys 5 more. Then she gives 3 to Leo.
               How many apples does Mia have now?\\nAnswer:"
    response: " 7 + 5 = 12. 12 - 3 = 9. The answer is 9."

It is built to be learnable by a tiny GPT-2 trained from scratch on a CPU: a few fixed templates,
start numbers 2-20, +/- operands 1-10, every intermediate result in 0..60 (re-drawn otherwise), so
each number is one GPT-2 token (" 12") and a whole example is 45-78 tokens (median 59).

Splits (JSONL, {"prompt", "response"} only), pairwise disjoint by prompt:
    base  100000  pretraining the shipped base model      train  1000  the fine-tuning set
    val      500  model selection                          test    500  final exact-match numbers
All come from one seeded stream, drawn in the order test, val, train, base and skipping any prompt
already used, so test/val/train do not change when --n-base does.

The base split is pretraining text, and flawed like worked solutions found on the web: half of its
answers (FLAW_RATE) stop one step short and give the result before the last step as the answer
(flawed(), stop_early()). train, val and test are clean. A base model trained on it has learned the
format and the arithmetic but often stops early: a mistake fine-tuning on clean answers can remove
(data/base/README.md). `--flaw-rate 0` gives clean pretraining text.

Grading: extract_answer() takes the integer in the LAST "The answer is N" of a text; is_correct()
compares it with the gold response's (a missing answer is always wrong); mistake() names the kind of
a wrong answer (stops early, arithmetic slip, wrong step, ...), for eval.py's mistake/* metrics.

    python -m data.arith --out data/arith                    # writes base/train/val/test.jsonl
    python -m data.arith --out out/arith-small --n-base 1000 --seed 1
    python -m data.arith --out out/arith-clean --flaw-rate 0   # clean pretraining text
    python -m pytest -q tests/test_arith.py
"""
import os
import random
import re
import sys
import time

from common import ArgumentParser, fraction, nonneg_int, run_main, write_jsonl

# where the default task lives (generated on first use, not committed)
DEFAULT_DIR = "data/arith"
DEFAULT_TRAIN, DEFAULT_VAL, DEFAULT_TEST = (f"{DEFAULT_DIR}/{split}.jsonl"
                                           for split in ("train", "val", "test"))
# generation order: the small splits first, so they stay fixed
SPLITS = ("test", "val", "train", "base")
DEFAULT_SIZES = {"base": 100000, "train": 1000, "val": 500, "test": 500}
MAX_VALUE = 60  # every intermediate result stays in 0..MAX_VALUE
START_RANGE = (2, 20)
OPERAND_RANGE = (1, 10)  # for + and -; small, so the model has few addition facts to learn
FACTOR_RANGE = (2, 5)  # for *
P_MUL = 0.15  # "occasionally" multiply
# one worked step, "7 + 5 = 12."
STEP = re.compile(r"(-?\d+) ([-+*]) (-?\d+) = (-?\d+)\.")
# the base split's flaw: the share of its worked answers that stop one step short (flawed())
FLAW_RATE = 0.5
FLAW_SEED = 1234

NAMES = [("Mia", "she", "her"), ("Leo", "he", "him"), ("Ana", "she", "her"), ("Tom", "he", "him"),
         ("Sara", "she", "her"), ("Ben", "he", "him"), ("Lily", "she", "her"), ("Sam", "he", "him"),
         ("Emma", "she", "her"), ("Noah", "he", "him"), ("Zoe", "she", "her"), ("Max", "he", "him")]
OBJECTS = ["apples", "pears", "marbles", "stickers", "books", "cookies", "coins", "pencils",
           "shells", "cards"]  # plural = singular + "s", for "1 apple"
# {s}: subject pronoun, {m}: object pronoun, {o}: the objects (singular when k == 1), {k}: the
# operand, {f}: a friend's name
ADD = ["{s} buys {k} more.", "{s} finds {k} more.", "{f} gives {m} {k} more.",
       "{s} gets {k} more {o}."]
SUB = ["{s} gives {k} to {f}.", "{s} loses {k}.", "{s} sells {k} of them.", "{s} drops {k}.",
       "{s} gives {k} {o} away."]
MUL = ["the number of {o} is multiplied by {k}.", "{s} ends up with {k} times as many {o}."]
START = ["{n} has {k} {o}.", "{n} starts with {k} {o}."]
QUESTION = ["How many {o} does {n} have now?", "How many {o} does {n} have in the end?"]
CONNECT = ["", "Then ", "After that "]  # step 1, step 2, step 3


def _noun(plural, k):
    return plural[:-1] if k == 1 else plural


def _cap(s):
    return s[0].upper() + s[1:]


def make_problem(rng, n_steps):
    """One problem with n_steps operations. Returns dict(prompt, response, answer)."""
    name, subj, objp = rng.choice(NAMES)
    obj = rng.choice(OBJECTS)
    value = rng.randint(*START_RANGE)
    story = [rng.choice(START).format(n=name, k=value, o=_noun(obj, value))]
    steps = []
    for i in range(n_steps):
        friend = rng.choice([n for n, _, _ in NAMES if n != name])
        while True:  # re-draw until the result is an integer in 0..MAX_VALUE
            r = rng.random()
            op = "*" if r < P_MUL else ("+" if r < (1 + P_MUL) / 2 else "-")
            k = rng.randint(*(FACTOR_RANGE if op == "*" else OPERAND_RANGE))
            new = value * k if op == "*" else value + k if op == "+" else value - k
            if 0 <= new <= MAX_VALUE:
                break
        template = rng.choice(MUL if op == "*" else ADD if op == "+" else SUB)
        noun = obj if op == "*" else _noun(obj, k)  # "3 times as many apples", "1 apple"
        sentence = template.format(s=subj, m=objp, o=noun, k=k, f=friend)
        story.append(_cap(CONNECT[min(i, 2)] + sentence))
        steps.append(f"{value} {op} {k} = {new}.")
        value = new
    question = rng.choice(QUESTION).format(o=obj, n=name)
    prompt = f"Question: {' '.join(story)} {question}\nAnswer:"
    response = " " + " ".join(steps) + f" The answer is {value}."
    return {"prompt": prompt, "response": response, "answer": value}


def _stream(seed, steps):
    rng = random.Random(seed)
    while True:
        yield make_problem(rng, rng.choice(steps))


def generate(n, seed=0, steps=(2, 3), exclude=None):
    """n distinct problems (by prompt) from a seeded stream; the number of steps is drawn from
    `steps`.

    exclude: a set of prompts to skip; it is updated with the new prompts."""
    seen = set() if exclude is None else exclude
    out = []
    for p in _stream(seed, tuple(steps)):
        if len(out) == n:
            break
        if p["prompt"] not in seen:
            seen.add(p["prompt"])
            out.append(p)
    return out


def stop_early(problem):
    """The same problem with a sloppy worked answer: all its steps but the last, and the result
    before the last step given as the answer."""
    kept = STEP.findall(problem["response"])[:-1]
    answer = int(kept[-1][3])
    work = " ".join(f"{a} {op} {k} = {result}." for a, op, k, result in kept)
    return {**problem, "response": f" {work} The answer is {answer}.", "answer": answer}


def flawed(records, rate=FLAW_RATE, seed=FLAW_SEED):
    """The pretraining text of the base split: each problem's worked answer stops one step short
    with probability `rate` (one draw per problem, in order, from its own seeded stream, so the
    first N problems are flawed the same way whatever the split's size)."""
    rng = random.Random(seed)
    return [stop_early(r) if rng.random() < rate else r for r in records]


def generate_splits(seed=0, sizes=None, steps=(2, 3), flaw_rate=FLAW_RATE):
    """{split: records} for SPLITS, from one stream, pairwise disjoint by prompt; the base split's
    answers carry the flaw (flawed()), the other splits are clean."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    stream, seen, splits = _stream(seed, tuple(steps)), set(), {}
    for split in SPLITS:
        recs = []
        while len(recs) < sizes[split]:
            p = next(stream)
            if p["prompt"] not in seen:
                seen.add(p["prompt"])
                recs.append(p)
        splits[split] = recs
    splits["base"] = flawed(splits["base"], flaw_rate)
    return splits


def write_splits(out_dir, seed=0, sizes=None, only=None, flaw_rate=FLAW_RATE):
    """Write {out_dir}/{split}.jsonl for every split (or those in `only`). Returns {split: path}."""
    t0 = time.time()
    splits = generate_splits(seed, sizes, flaw_rate=flaw_rate)
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for split in SPLITS:
        if only is not None and split not in only:
            continue
        paths[split] = os.path.join(out_dir, f"{split}.jsonl")
        records = [{"prompt": r["prompt"], "response": r["response"]} for r in splits[split]]
        write_jsonl(paths[split], records)
        print(f"wrote {paths[split]} ({len(splits[split])} problems)", file=sys.stderr)
    print(f"arith: seed {seed}, {time.time() - t0:.1f}s", file=sys.stderr)
    return paths


def is_builtin(path):
    """True when path is the built-in task's training file (some defaults follow the task)."""
    return os.path.abspath(path) == os.path.abspath(DEFAULT_TRAIN)


def ensure_default_file(path):
    """When `path` is one of the default task's files (data/arith/*.jsonl), generate the task if it
    is missing (a fresh clone); any other path is left alone."""
    if os.path.abspath(os.path.dirname(path)) == os.path.abspath(DEFAULT_DIR):
        ensure_default_data(DEFAULT_DIR)


def ensure_default_data(out_dir=DEFAULT_DIR):
    """Generate the default splits into out_dir; files already there are left untouched. Concurrent
    callers (every rank of a torchrun) are safe: each file is written whole, atomically, with the
    same bytes."""
    missing = [s for s in SPLITS if not os.path.exists(os.path.join(out_dir, f"{s}.jsonl"))]
    if missing:
        names = ", ".join(m + ".jsonl" for m in missing)
        print(f"{out_dir}: missing {names}; generating the default arithmetic task "
              f"(python -m data.arith --out {out_dir})", file=sys.stderr)
        write_splits(out_dir, only=missing)
    return {s: os.path.join(out_dir, f"{s}.jsonl") for s in SPLITS}


# "The answer is" then an integer: optional dollar sign, minus sign, thousands commas, and an
# optional decimal part (a non-integer answer extracts as None rather than a wrong integer).
_ANSWER = re.compile(r"the answer is:?\s*\$?\s*(-?\d+(?:,\d{3})*)(\.\d+)?", re.IGNORECASE)


def extract_answer(text):
    """The integer in the LAST "The answer is N" of text, or None."""
    matches = _ANSWER.findall(text)
    if not matches:
        return None
    number, frac = matches[-1]
    if frac and frac.strip(".0"):
        return None  # e.g. "The answer is 3.5": not an integer answer
    return int(number.replace(",", ""))


def is_correct(completion, gold_response):
    """Exact match of the extracted integers; a missing answer (None) never matches."""
    pred, gold = extract_answer(completion), extract_answer(gold_response)
    return pred is not None and gold is not None and pred == gold


def gold_key(records):
    """The field that holds the gold answer: "chosen" in preference data, else "response"."""
    return "chosen" if "chosen" in records[0] else "response"


def has_checker(records):
    """True when every gold answer ends in a gradable 'The answer is N'."""
    key = gold_key(records)
    return all(extract_answer(r[key]) is not None for r in records)


def require_checker(records, what):
    """`what` needs checkable answers: a ValueError saying so when the data has none."""
    if not has_checker(records):
        raise ValueError(f"{what} needs checkable answers: every gold answer must end in 'The "
                         "answer is N' (the built-in task, GSM8K); this data has none")


def grade(records, texts):
    """Per record and text of it: (correct, identical to the gold answer). texts[i]: a list of
    (text, ended) pairs; a text that did not end (no EOT) is never identical."""
    key, out = gold_key(records), []
    for r, row in zip(records, texts):
        gold = r[key]
        out.append([(is_correct(t, gold), ended and t.strip() == gold.strip()) for t, ended in row])
    return out


# the kinds of greedy answers mistake() tells apart, in the order of the tables
MISTAKES = ("correct", "stops early", "arithmetic slip", "wrong step", "extra step", "no working",
            "no answer")


def mistake(completion, gold_response):
    """What kind of answer a completion is, against the worked gold answer: "correct"; "stops
    early" (its steps are the gold's first ones, and it stops before the last); "arithmetic slip"
    (a step's result is wrong for its own numbers); "wrong step" (a step that is not the gold's:
    another operation or number); "extra step"; "no working" (an answer without steps); "no
    answer". On data whose gold answers have no worked steps (GSM8K), a wrong answer is "wrong
    step"."""
    if is_correct(completion, gold_response):
        return "correct"
    if extract_answer(completion) is None:
        return "no answer"
    steps, gold = STEP.findall(completion), STEP.findall(gold_response)
    if not steps:
        return "no working"
    for (a, op, k, result), want in zip(steps, gold):
        if (a, op, k) != want[:3]:
            return "wrong step"
        if str(_apply(int(a), op, int(k))) != result:
            return "arithmetic slip"
    if len(steps) < len(gold):
        return "stops early"
    return "extra step" if len(steps) > len(gold) else "wrong step"


def _apply(a, op, k):
    return a + k if op == "+" else a - k if op == "-" else a * k


def main():
    p = ArgumentParser(description="Generate the arithmetic word-problem task as JSONL splits.")
    p.add_argument("--out", default=DEFAULT_DIR, help="output directory of the four splits")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same files")
    p.add_argument("--flaw-rate", type=fraction, default=FLAW_RATE, help="the share of the base "
                   "split's worked answers that stop one step short (0: clean pretraining text)")
    for split in ("base", "train", "val", "test"):
        p.add_argument(f"--n-{split}", type=nonneg_int, default=DEFAULT_SIZES[split],
                       help=f"number of {split} problems")
    args = p.parse_args()
    sizes = {s: getattr(args, f"n_{s}") for s in SPLITS}
    write_splits(args.out, args.seed, sizes, flaw_rate=args.flaw_rate)


if __name__ == "__main__":
    run_main(main)
