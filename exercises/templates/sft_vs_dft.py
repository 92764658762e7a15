"""Your answers to exercise sft_vs_dft (questions: exercises/README.md), after the three runs:
    python train.py --loss sft --max-examples 256 --epochs 1 --lr 1e-4 --eval-max-examples 200 --log-every 1 --seed 0 --out-dir out/sft_vs_dft/sft
    python train.py --loss dft ... --out-dir out/sft_vs_dft/dft
    python train.py --loss dpo ... --out-dir out/sft_vs_dft/dpo
Check them with  python -m exercises.check sft_vs_dft --impl THIS_FILE  (add --runs DIR if your runs are not in
out/sft_vs_dft; in the student edition, exercises/yours/sft_vs_dft.py is checked without --impl).
Numbers to 3 decimals are enough; the trends come from exercises/reference_numbers.json (several seeds)."""

ANSWERS = {
    "nll_before": None,             # held-out nll of the starting model (the "before" column)
    "nll_after_sft": None,          # held-out nll after each run
    "nll_after_dft": None,
    "nll_after_dpo": None,
    "exact_match_after_sft": None,
    "exact_match_after_dft": None,
    "lower_nll": None,              # "sft", "dft" or "same": which ends with the lower held-out nll, over the seeds
    "dft_nll": None,                # "up", "down" or "same": DFT's held-out nll against the base model's
    "dft_neg": None,                # "up", "down" or "same": DFT's log-prob of its negatives against the base model's
    "dpo_logp_pos": None,           # "up", "down" or "same": held-out logp/pos after DPO against before
    "why_neg_down": None,           # "a", "b", "c" or "d"
    "nll_meaning": None,            # "a", "b", "c" or "d"
    "why_dft_nll": None,            # "a", "b", "c" or "d"
}
