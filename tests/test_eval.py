"""eval.py: held-out NLL equals a hand computation over the scored positions only, batching and ranks
do not change the numbers, preference accuracy and exact match on hand-made cases, and the CLI prints
one side-by-side table (+ JSON) for several checkpoints."""
import json
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import eval as ev
import sample
from data.tokenizer import EOT, get_tokenizer
from model import GPT, config_for
from negatives import NegativeSettings, origin_of, read_negatives, sample_negatives

RECORDS = [  # uneven lengths, so batches are padded
    {"prompt": "Question: Mia has 7 apples. She buys 5 more. How many apples does Mia have now?\nAnswer:",
     "response": " 7 + 5 = 12. The answer is 12."},
    {"prompt": "Question: Leo has 3 coins.\nAnswer:", "response": " The answer is 3."},
    {"prompt": "Q: 2+2?\nA:", "response": " 2 + 2 = 4. So that makes four, and the answer is 4."},
    {"prompt": "Question: Zoe starts with 9 cards. She loses 2. How many?\nAnswer:", "response": " 9 - 2 = 7."},
    {"prompt": "Hi", "response": " there, friend"},
]
NEGS = [[([11, 12, 13], True), ([14], False)], [([15, 16], True)], [], [([17] * 9, False), ([18], True), ([19], True)],
        [([20, 21], True)]]  # per example: (token ids, eos); counts vary, one example has none
# the same, every gold answer checkable ("The answer is N"): exact match grades all five
GRADED = RECORDS[:3] + [{**RECORDS[3], "response": " 9 - 2 = 7. The answer is 7."},
                        {**RECORDS[4], "response": " there, friend. The answer is 0."}]
KW = dict(max_len=64, max_prompt_len=32)


def S(**kw):
    """The tests' EvalSettings: short lengths, no progress line."""
    return ev.EvalSettings(**{**KW, "progress": False, **kw})


def tiny(seed=0):
    torch.manual_seed(seed)
    return GPT(config_for("tiny")).eval()


def hand_logp(model, prompt_ids, resp_ids):
    """Summed log-prob of resp_ids after prompt_ids, straight from log_softmax(model(ids))."""
    ids = torch.tensor(prompt_ids + resp_ids)
    lp = model(ids[None, :-1])[0].log_softmax(-1)  # (L-1, V)
    return sum(lp[t - 1, ids[t]].item() for t in range(len(prompt_ids), len(ids)))


def close(a, b, tol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=tol, abs=tol), k


def test_nll_matches_hand_computation():
    model, tok = tiny(), get_tokenizer()
    recs = RECORDS[:2]
    m = ev.evaluate(model, recs, settings=S(max_new_tokens=4))
    lps, n = [], 0
    for r in recs:
        resp = tok.encode_ordinary(r["response"]) + [EOT]  # scored: response tokens + EOT, never the prompt
        lps.append(hand_logp(model, tok.encode_ordinary(r["prompt"]), resp))
        n += len(resp)
    assert m["n_tokens"] == n and m["n_examples"] == 2
    assert m["nll"] == pytest.approx(-sum(lps) / n, rel=1e-5)
    assert m["ppl"] == pytest.approx(math.exp(-sum(lps) / n), rel=1e-5)
    assert m["logp/pos"] == pytest.approx(sum(lps) / 2, rel=1e-5)
    assert "exact_match" in m and "pref_acc" not in m  # auto: every response holds "The answer is"


def test_batch_size_does_not_change_metrics():
    model = tiny()
    a = ev.evaluate(model, RECORDS, NEGS, S(exact_match=False, batch_size=1))
    b = ev.evaluate(model, RECORDS, NEGS, S(exact_match=False, batch_size=3))
    close(a, b)
    assert a["n_pairs"] == 7 and "exact_match" not in a


def test_negatives_and_preference_data_by_hand():
    model, tok = tiny(), get_tokenizer()
    pos, neg = [], []
    for r, negs in zip(RECORDS, NEGS):
        p = tok.encode_ordinary(r["prompt"])
        pos.append(hand_logp(model, p, tok.encode_ordinary(r["response"]) + [EOT]))
        neg.append([hand_logp(model, p, ids + ([EOT] if eos else [])) for ids, eos in negs])
    m = ev.evaluate(model, RECORDS, NEGS, S(exact_match=False))
    flat = [(pi, nj) for pi, ns in zip(pos, neg) for nj in ns]
    assert m["logp/neg"] == pytest.approx(sum(nj for _, nj in flat) / len(flat), rel=1e-5)
    assert m["pref_acc"] == pytest.approx(sum(pi > nj for pi, nj in flat) / len(flat))
    # preference-style records: the rejected response is the one negative
    prefs = [{"prompt": r["prompt"], "chosen": r["response"], "rejected": " no idea"} for r in RECORDS]
    no_idea = tok.encode_ordinary(" no idea") + [EOT]
    rej = [hand_logp(model, tok.encode_ordinary(r["prompt"]), no_idea) for r in RECORDS]
    m = ev.evaluate(model, prefs, settings=S(exact_match=False))
    assert m["n_pairs"] == 5 and m["logp/neg"] == pytest.approx(sum(rej) / 5, rel=1e-5)
    assert m["pref_acc"] == pytest.approx(sum(a > b for a, b in zip(pos, rej)) / 5)


def test_train_mode_restored():
    model = tiny().train()
    ev.evaluate(model, RECORDS[:1], settings=S(exact_match=False))
    assert model.training


def test_preference_accuracy_by_hand():
    nan = float("nan")
    pos = torch.tensor([-1.0, -5.0, -3.0])
    neg = torch.tensor([[-2.0, -0.5], [-6.0, nan], [-3.0, nan]])  # win, loss | win | tie (= loss)
    assert ev.preference_accuracy(pos, neg) == pytest.approx(2 / 4)
    assert math.isnan(ev.preference_accuracy(pos, torch.full((3, 1), nan)))
    # summed vs length-normalized disagree: -10 over 10 tokens (-1/token) vs -6 over 3 tokens (-2/token)
    pos = torch.tensor([[-10.0, 10.0, 0.0]], dtype=torch.float64)  # logp, n_tokens, truncated
    neg = torch.tensor([[[-6.0, 0.0], [3.0, 0.0], [nan, nan], [nan, nan]]],  # logp, n_tokens,
                       dtype=torch.float64)  # correct, identical; second slot: no negative
    m = ev.compute_metrics(pos, neg)
    assert m["pref_acc"] == 0.0 and m["pref_acc/avg"] == 1.0 and m["n_pairs"] == 1
    assert m["logp/neg"] == -6.0 and "neg/correct" not in m and "exact_match" not in m


def test_exact_match_with_a_fake_generator(monkeypatch):
    tok, calls = get_tokenizer(), []

    def fake_generate(model, prompts, max_new_tokens, how=sample.GREEDY, **kw):
        calls.append((how.temperature, max_new_tokens, [list(p) for p in prompts]))
        # right for the Mia question (12), a wrong number for Leo, no answer at all for the others
        out = {"Mia": " 7 + 5 = 12. The answer is 12.", "Leo": " The answer is 4."}
        texts = [next((v for k, v in out.items() if k in tok.decode(list(p))), " I don't know") for p in prompts]
        return [(tok.encode_ordinary(t), True) for t in texts]  # new ids without the EOT, as generate

    monkeypatch.setattr(ev, "generate", fake_generate)
    recs = [RECORDS[0], RECORDS[1], RECORDS[2]]
    m = ev.evaluate(tiny(), recs, settings=S(batch_size=2, max_new_tokens=7))
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert all(t == 0.0 and n == 7 for t, n, _ in calls)  # greedy
    seen = sorted(p for _, _, ps in calls for p in ps)
    assert seen == sorted(tok.encode_ordinary(r["prompt"]) for r in recs)  # every prompt once, uncut
    calls.clear()
    assert "exact_match" not in ev.evaluate(tiny(), recs, settings=S(exact_match=False))
    assert not calls
    # no "The answer is": auto off
    m = ev.evaluate(tiny(), RECORDS[3:], settings=S(exact_match=None))
    assert "exact_match" not in m and not calls
    # asked for on data without checkable answers: nothing to grade, n/a (None), nothing decoded
    m = ev.evaluate(tiny(), RECORDS[3:], settings=S(exact_match=True))
    assert m["exact_match"] is None and not calls


def answer_12(model, prompts, max_new_tokens, how=sample.GREEDY, **kw):
    """A stand-in for sample.generate: every prompt is answered 12 (right for GRADED[0] only)."""
    return [(get_tokenizer().encode_ordinary(" The answer is 12."), True) for _ in prompts]


def _worker(rank, store_path, out_path):
    ev.generate = answer_12  # this spawned process only
    store = dist.FileStore(store_path, 2)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
    try:
        m = ev.evaluate(tiny(), GRADED, NEGS, S(exact_match=True, batch_size=2))
        with open(f"{out_path}.{rank}", "w") as f:
            json.dump(m, f)
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "generate", answer_12)
    one = ev.evaluate(tiny(), GRADED, NEGS, S(exact_match=True, batch_size=2))
    out = str(tmp_path / "m.json")
    mp.spawn(_worker, args=(str(tmp_path / "store"), out), nprocs=2, join=True)
    for r in range(2):
        with open(f"{out}.{r}") as f:
            close(json.load(f), one)
    # shards {0, 2, 4} and {1, 3}: averaging the ranks' means would give (1/3 + 0) / 2, not 1/5
    assert one["n_examples"] == 5 and one["n_pairs"] == 7 and one["exact_match"] == pytest.approx(1 / 5)


def test_cli_two_checkpoints_side_by_side(tmp_path, capsys):
    for i, name in enumerate(("base", "sft")):
        tiny(seed=i).save_pretrained(str(tmp_path / name))
    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    out = tmp_path / "res" / "eval.json"
    res = ev.main(["--init", f"base={tmp_path / 'base'}", str(tmp_path / "sft"), "--data", str(data),
                   "--max-len", "64", "--max-prompt-len", "32", "--max-new-tokens", "3", "--json", str(out),
                   "--device", "cpu"])
    table = capsys.readouterr().out
    header = [line for line in table.splitlines() if line.startswith("metric")][0]
    assert "base" in header and str(tmp_path / "sft") in header
    assert all(any(line.startswith(k + " ") for line in table.splitlines()) for k in ("nll", "ppl", "n_tokens"))
    saved = json.loads(out.read_text())
    assert list(saved) == ["base", str(tmp_path / "sft")] and saved == res
    assert saved["base"]["nll"] != saved[str(tmp_path / "sft")]["nll"]  # two different models
    base = GPT.from_pretrained(str(tmp_path / "base"))
    direct = ev.evaluate(base, RECORDS, settings=S(exact_match=False))
    assert saved["base"]["nll"] == pytest.approx(direct["nll"], rel=1e-6)


def test_cli_default_lengths_and_negatives_of_this_data(tmp_path):
    """Without --max-len / --max-prompt-len eval.py scores with the model's lengths (min(1024,
    block_size) and half of it); a --negatives file must be one of this --data (its sha256 and
    number of examples), whatever settings it was sampled with."""
    model = tiny()
    model.save_pretrained(str(tmp_path / "m"))
    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    args = ["--init", f"m={tmp_path / 'm'}", "--data", str(data), "--max-new-tokens", "3",
            "--device", "cpu"]
    lengths = S(max_len=128, max_prompt_len=64)  # a tiny model has 128 positions
    close(ev.main(args)["m"], ev.evaluate(model, RECORDS, settings=lengths))
    negs = str(tmp_path / "negs.jsonl")
    settings = NegativeSettings(B=1, epochs=2, max_new_tokens=5, temperature=1.0, top_k=0)
    sample_negatives(model, RECORDS, negs, settings, origin_of(str(data), len(RECORDS), model, "m"))
    with_negs = ev.main(args + ["--negatives", negs])["m"]
    assert with_negs["n_pairs"] == 2 * len(RECORDS)  # every negative of each example is scored
    direct = ev.evaluate(model, RECORDS, read_negatives(negs, {}), lengths)
    close(with_negs, direct)
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:4]))
    args[args.index("--data") + 1] = str(other)
    with pytest.raises(ValueError, match=r"sampled with other settings \(data_sha256: .*; "
                       r"n_examples: 5 -> 4\); pass the negatives of this --data file"):
        ev.main(args + ["--negatives", negs])


def test_format_table():
    t = ev.format_table({"base": {"nll": 2.5, "n_examples": 10.0}, "dft": {"nll": 1.25, "pref_acc": 0.75, "n_examples": 10.0}})
    lines = t.splitlines()
    assert lines[0].split() == ["metric", "base", "dft"]
    assert lines[2].split() == ["nll", "2.5000", "1.2500"]
    assert lines[3].split() == ["pref_acc", "-", "0.7500"] and lines[4].split() == ["n_examples", "10", "10"]


def test_negatives_graded_by_the_task_checker():
    """On checkable data: the share of negatives that are correct / identical to the reference, and pref_acc
    over the wrong ones only."""
    model, tok = tiny(), get_tokenizer()
    recs = [{"prompt": "Q: 1+1?\nA:", "response": " The answer is 2."}, {"prompt": "Q: 2+2?\nA:", "response": " The answer is 4."}]
    enc = lambda t: tok.encode_ordinary(t)  # noqa: E731
    negs = [[(enc(" The answer is 2."), True), (enc(" The answer is 3."), True)],   # identical; wrong
            [(enc(" so the answer is 4."), True), (enc(" The answer is 5."), False)]]  # correct, not identical; wrong
    m = ev.evaluate(model, recs, negs, S(exact_match=False))
    assert m["neg/correct"] == 0.5 and m["neg/identical"] == 0.25
    full = ev.evaluate(model, recs, [[n[1]] for n in negs], S(exact_match=False))
    assert m["pref_acc/wrong"] == full["pref_acc"]   # the wrong negatives alone
    no_checker = ev.evaluate(model, RECORDS, NEGS, S(exact_match=False))
    assert "neg/correct" not in no_checker
