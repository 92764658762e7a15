"""sample.py: KV-cache sampling equals the slow full-forward loop, batching changes nothing, the
filters keep exactly the intended tokens, EOS stops a row, seeds reproduce, a prompt is never cut to
make room (the new tokens are capped instead). DFT's negatives: tests/test_negatives.py."""
import pytest
import torch

import sample
from data.tokenizer import EOT, get_tokenizer
from model import GPT, config_for
from sample import GREEDY, Decoding, generate, pick, top_k_filter, top_p_filter

PROMPTS = ["Question: 2 + 3?\nAnswer:", "Hi",
           "A much longer prompt, with quite a few more tokens in it than the others.",
           "x", "Tell me a story about a cat.", "1 2 3 4 5", "The end"]


def tiny_model():
    torch.manual_seed(0)
    return GPT(config_for("tiny")).eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's ops are too small to share: one thread is as fast alone and far faster when
    other processes load the cores (OpenMP threads then spin-wait on each other)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def slow_greedy(model, ids, n):
    """The obviously-correct reference: full forward over the whole sequence at every step."""
    idx = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(n):
            idx = torch.cat([idx, model(idx)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx[0, len(ids):].tolist()


# -----------------------------------------------------------------------------
# sampling


def test_greedy_kv_cache_equals_full_forward_and_batch_equals_one_by_one(model):
    tok = get_tokenizer()
    prompts = [tok.encode_ordinary(p) for p in PROMPTS[:4]]  # lengths 9, 1, 19, 1
    batch = generate(model, prompts, 10, GREEDY)
    for p, (new, eos) in zip(prompts, batch):
        assert (new, eos) == (slow_greedy(model, p, 10), False)
        assert generate(model, [p], 10, GREEDY) == [(new, eos)]


def test_prompt_longer_than_block_size_keeps_its_end(model):
    long = list(range(1000, 1000 + 200))  # block_size is 128
    out = generate(model, [long], 8, GREEDY)  # no room left: 1 new token after the last 127
    assert out[0][0] == slow_greedy(model, long[-(128 - 1):], 1)
    assert len(generate(model, [[1]], 500, GREEDY)[0][0]) == 127  # capped at block_size - 1


def test_prompt_is_never_cut_to_make_room(model):
    """A prompt that fits is kept whole: max_new_tokens is capped so that the longest prompt and its
    new tokens fit in block_size (128)."""
    p = list(range(1000, 1000 + 100))
    out = generate(model, [p, [1]], 50, GREEDY)  # the longest prompt leaves room for 28
    assert out[0] == (slow_greedy(model, p, 28), False)
    assert out[1] == (slow_greedy(model, [1], 28), False)
    assert generate(model, [p], 20, GREEDY)[0][0] == slow_greedy(model, p, 20)  # fits: not capped


def test_top_k_filter_exact_and_ties_deterministic():
    x = torch.tensor([[1.0, 3.0, 2.0, 0.0, -1.0]])
    kept = lambda y: (y > float("-inf"))[0].nonzero()[:, 0].tolist()
    assert kept(top_k_filter(x, 1)) == [1]
    assert kept(top_k_filter(x, 3)) == [0, 1, 2]
    assert kept(top_k_filter(x, 99)) == [0, 1, 2, 3, 4]
    assert torch.equal(top_k_filter(x, 3)[0, :3], x[0, :3])  # kept logits unchanged
    ties = torch.tensor([[5.0, 2.0, 1.0, 2.0]])  # a tie at the k-th value: exactly k kept, the same every call
    first = kept(top_k_filter(ties, 2))
    assert len(first) == 2 and first[0] == 0 and first[1] in (1, 3)
    assert all(kept(top_k_filter(ties, 2)) == first for _ in range(5))


def test_top_p_filter_exact_and_ties_kept():
    x = torch.tensor([[0.15, 0.5, 0.05, 0.3]]).log()
    kept = lambda y: (y > float("-inf"))[0].nonzero()[:, 0].tolist()
    assert kept(top_p_filter(x, 1e-6)) == [1]  # the top token always survives
    assert kept(top_p_filter(x, 0.4)) == [1]
    assert kept(top_p_filter(x, 0.7)) == [1, 3]  # 0.5 < 0.7 <= 0.8
    assert kept(top_p_filter(x, 0.9)) == [0, 1, 3]
    assert kept(top_p_filter(x, 0.99)) == [0, 1, 2, 3]
    ties = torch.tensor([[0.2, 0.4, 0.2, 0.2]]).log()
    assert kept(top_p_filter(ties, 0.5)) == [0, 1, 2, 3]  # the 2nd token ties with two others: all kept


def test_pick_is_exact_inverse_cdf_sampling():
    logits = torch.tensor([0.1, 0.2, 0.3, 0.4]).log().expand(1000, 4)
    u = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000  # evenly spread uniforms
    counts = lambda how: torch.bincount(pick(logits, u, how), minlength=4).tolist()  # noqa: E731
    assert counts(Decoding(1.0)) == [100, 200, 300, 400]
    assert counts(Decoding(1.0, top_k=2)) == [0, 0, 429, 571]  # 3/7, 4/7
    assert counts(Decoding(1.0, top_p=0.5)) == [0, 0, 429, 571]
    assert pick(logits, u, GREEDY).unique().tolist() == [3]  # temperature 0 = argmax


def test_temperature_zero_is_greedy_and_negative_raises(model):
    p = [[15496, 995]]
    assert generate(model, p, 6, Decoding(0.0), generator=torch.Generator().manual_seed(1)) == \
        [(slow_greedy(model, p[0], 6), False)]
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        generate(model, p, 6, Decoding(temperature=-0.5))
    with pytest.raises(ValueError, match="top_p"):
        generate(model, p, 6, Decoding(top_p=0.0))


def test_eos_stops_one_row_while_others_continue(model, monkeypatch):
    prompts = [[15496, 995], [40, 1842, 345]]
    alone = generate(model, prompts[1:], 12, GREEDY)[0]
    real_decode, calls = model.decode, []

    def decode(tok, cache):  # row 0 emits EOT at step 2 (logits of the 2nd decode call)
        logits = real_decode(tok, cache)
        calls.append(tok.clone())
        if len(calls) == 2:
            logits[0] = float("-inf")
            logits[0, EOT] = 0.0
        return logits

    monkeypatch.setattr(model, "decode", decode)
    out = generate(model, prompts, 12, GREEDY)
    assert out[0] == (slow_greedy(model, prompts[0], 2), True)  # 2 tokens, then EOT (not in ids)
    assert out[1] == alone  # the other row is untouched
    assert all(int(t[0]) == EOT for t in calls[2:])  # the finished row is fed the pad token

    def all_eot(tok, cache):  # every row emits EOT at step 1
        calls.append(tok)
        return torch.full((2, 50257), -1e9).index_fill_(1, torch.tensor([EOT]), 0.0)

    calls.clear()
    monkeypatch.setattr(model, "decode", all_eot)
    out = generate(model, prompts, 100, GREEDY)
    assert out == [(slow_greedy(model, p, 1), True) for p in prompts]
    assert len(calls) < sample.CHECK_EVERY  # the loop stopped at the next all-done check, not after 100 steps
    calls.clear()  # stop_at_eos=False (benchmarks): every row runs to max_new_tokens, EOT included
    out = generate(model, prompts, 12, Decoding(0.0, stop_at_eos=False))
    assert out == [(slow_greedy(model, p, 1) + [EOT] * 11, False) for p in prompts]
    assert len(calls) == 11


def test_same_seed_same_samples_different_seed_different(model):
    p = [[15496, 995], [40]]
    how = Decoding(temperature=1.0, top_k=50)
    a = generate(model, p, 8, how, generator=torch.Generator().manual_seed(3))
    b = generate(model, p, 8, how, generator=torch.Generator().manual_seed(3))
    c = generate(model, p, 8, how, generator=torch.Generator().manual_seed(4))
    assert a == b and a != c


def test_cli_prints_numbered_samples(capsys):
    sample.main(["--init", "scratch", "--size", "tiny", "--prompt", "Hello", "--num", "2", "--max-new-tokens", "4", "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.count("--- prompt ---\nHello\n") == 1
    assert "--- sample 1 of 2" in out and "--- sample 2 of 2" in out and "tokens/s" in out


def test_cli_missing_default_model_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="shipped base model is missing.*--init gpt2"):
        sample.main(["--prompt", "hi", "--device", "cpu"])
