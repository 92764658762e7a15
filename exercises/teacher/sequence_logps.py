"""Teacher's part of exercise sequence_logps: the float64 reference and the cases it scores."""
import math

from exercises.sequence_logps import build, compare

from .ref import mistakes as named

PUBLIC = [{"name": "random logits, four rows (the last all prompt)", "seed": 0,
           "n_prompt": [1, 3, 2, 99], "length": [6, 5, 3, 6]},
          {"name": "logit gaps of 900: log_softmax, not the log of softmax",
           "logits": [[[0.0, -900.0, 5.0], [3.0, 2.0, -850.0], [1.0, 1.0, 1.0]],
                      [[-700.0, 0.0, 0.0], [0.0, 0.5, -1.0], [2.0, -3.0, 0.0]]],
           "targets": [[1, 2, 0], [0, 1, 2]], "n_prompt": [1, 1], "length": [3, 2]}]
CASES = [{"name": "other logits, shorter rows", "seed": 11, "N": 3, "T": 8, "V": 5, "scale": 4.0,
          "n_prompt": [2, 5, 1], "length": [7, 8, 2]},
         {"name": "a larger vocabulary", "seed": 12, "N": 2, "T": 5, "V": 50, "scale": 6.0,
          "n_prompt": [3, 1], "length": [5, 4]}]


def reference(logits, targets, mask, scored=None):
    """Python loop, float64: the sum over scored t of logits[t, y_t] - log sum_v exp(logits[t, v]).
    scored(n, t) overrides which positions count (to compute what a mistake would give)."""
    out, cnt = [], []
    for n in range(logits.shape[0]):
        tot, c = 0.0, 0
        for t in range(logits.shape[1]):
            if (scored(n, t) if scored else mask[n, t]):
                row = [float(v) for v in logits[n, t].double()]
                m = max(row)
                tot += row[int(targets[n, t])] - (m + math.log(sum(math.exp(v - m) for v in row)))
                c += 1
        out.append(tot)
        cnt.append(c)
    return out, cnt


def expected(c):
    logits, targets, mask = build(c)
    want, cnt = reference(logits, targets, mask)
    T = mask.shape[1]
    return {"logps": want, "n_tokens": cnt, "mistakes": named([
        ("logps", reference(logits, targets, mask, lambda n, t: True)[0],
         "the mask is ignored: prompt and padding positions are summed too"),
        ("logps", [w / max(k, 1) for w, k in zip(want, cnt)], "logps is the SUM over the scored "
                                                              "tokens, not their mean"),
        ("logps", reference(logits, targets, mask,
                            lambda n, t: t + 1 < T and bool(mask[n, t + 1]))[0],
         "the mask is shifted by one position: mask[t] already says whether targets[t] is "
         "scored")])}


def checks(m, opts):
    return [(f"teacher case: {c['name']}", (lambda c=c: compare(m, c, expected(c)))) for c in CASES]
