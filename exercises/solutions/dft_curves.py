"""
Worked solution of the dft_curves exercise: an SVG drawn by hand (no plotting library), and the
numbers read from the run's metrics.jsonl.

    python train.py --loss dft --max-examples 64 --max-steps 8 --log-every 1 \
        --out-dir out/ex_plot --no-eval
    python -m exercises.check dft_curves --impl exercises/solutions/dft_curves.py

What the curves show: logp/neg falls below logp0/neg (the same negatives under the base model):
DFT pushes its negatives down, and log_u (the table's mean) falls with them, since u tracks how much
the model likes its negatives compared with the base model. w/max rises above 1: the weights single
out the negatives the model still likes more than the others. logp/pos moves with the batch (each
step scores other prompts): four steps say little about it; logp/neg - logp0/neg, the same negatives
under two models, is the curve free of that noise.
"""
import json
import os

SERIES = ("log_u/table_mean", "w/mean", "w/max", "logp/pos", "logp/neg", "logp0/neg")
COLORS = ("#1f77b4", "#ff7f0e", "#d62728", "#2ca02c", "#9467bd", "#8c564b")


def rows_of(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot(run_dir, path):
    """One panel per series, side by side, each on its own scale (log-probs and weights differ)."""
    rows = rows_of(run_dir)
    steps = [r["step"] for r in rows]
    W, H, pad = 220, 160, 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * len(SERIES)}" '
             f'height="{H + 2 * pad}">']
    for k, (key, color) in enumerate(zip(SERIES, COLORS)):
        ys = [r[key] for r in rows]
        lo, hi = min(ys), max(ys)
        span, x0 = (hi - lo) or 1.0, k * W + pad
        xs = [x0 + (s - steps[0]) / max(1, steps[-1] - steps[0]) * (W - 2 * pad) for s in steps]
        pts = " ".join(f"{x:.1f},{pad + (hi - y) / span * H:.1f}" for x, y in zip(xs, ys))
        label = f"{key} ({lo:.3g} .. {hi:.3g})"
        parts += [f'<text x="{x0}" y="{pad - 10}" font-size="12">{label}</text>',
                  f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>']
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def answers(run_dir):
    rows = rows_of(run_dir)
    first, last = rows[0]["log_u/table_mean"], rows[-1]["log_u/table_mean"]
    return {
        "steps": len(rows),
        "w_max_peak": max(r["w/max"] for r in rows),
        "log_u_last": last,
        "neg_vs_base_last": rows[-1]["logp/neg"] - rows[-1]["logp0/neg"],
        "u_trend": "same" if abs(last - first) < 1e-3 else "up" if last > first else "down",
        "what_it_shows": (
            "logp/neg falls below logp0/neg, the same negatives under the base model: DFT pushes "
            "its negatives down, and log_u falls with them, since u tracks how much the model "
            "likes its negatives compared with the base model. w/max rises above 1: the weights "
            "single out the negatives the model still likes most. logp/pos moves with the batch, "
            "since each step scores other prompts; the difference logp/neg - logp0/neg compares "
            "the same negatives under two models and is free of that noise."),
    }
