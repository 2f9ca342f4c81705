"""Decoding: speculative decoding (the target's greedy output exactly, and its sampling distribution),
and the int8 KV cache (its loss against the full-precision cache, its bytes against economics')."""

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from scalelab.model.config import ModelConfig
from scalelab.model.speculative import expected_tokens_per_pass, speculative_generate
from scalelab.model.transformer import Transformer, generate


def _model(seed: int, vocab: int = 64, d: int = 32, layers: int = 2, scale: float = 1.0) -> Transformer:
    torch.manual_seed(seed)
    m = Transformer(ModelConfig(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=2, max_seq_len=96,
                                init_std=0.02 * scale))
    return m.eval()


@pytest.mark.parametrize("gamma", [1, 3, 8])
def test_greedy_speculative_output_is_the_targets_greedy_output(gamma):
    target, draft = _model(0, scale=20), _model(1, d=16, layers=1, scale=20)  # sharp, mostly disagreeing models
    for prompt in ([5], [3, 9, 27, 1]):
        idx = torch.tensor([prompt])
        want = generate(target, idx, 40, temperature=0)
        got, stats = speculative_generate(target, draft, idx, 40, gamma=gamma, temperature=0)
        assert torch.equal(got, want)
        assert stats.rounds <= 40 and stats.accepted + stats.rounds == 40
    # a draft equal to its target is always accepted: gamma + 1 tokens per target pass
    same, stats = speculative_generate(target, target, idx, 36, gamma=gamma, temperature=0)
    assert torch.equal(same, generate(target, idx, 36, temperature=0)) and stats.acceptance_rate == 1.0
    assert stats.rounds == -(-36 // (gamma + 1))


def test_sampled_speculative_output_is_distributed_as_the_target():
    """Two new tokens over a 4-token vocabulary: the 16 sequences' frequencies in 1,500 speculative samples
    against the target's exact probabilities (chi-square), with a draft that disagrees with it."""
    V = 4
    target, draft = _model(2, vocab=V, scale=8), _model(3, vocab=V, d=16, layers=1, scale=8)
    prompt = torch.tensor([[1, 3]])
    with torch.no_grad():
        p1 = target(prompt).logits[0, -1].softmax(-1)
        exact = {}
        for a in range(V):
            p2 = target(torch.tensor([[1, 3, a]])).logits[0, -1].softmax(-1)
            for b in range(V):
                exact[(a, b)] = float(p1[a] * p2[b])
    g = torch.Generator().manual_seed(0)
    counts, alphas = dict.fromkeys(exact, 0), []
    n = 1500
    for _ in range(n):
        out, stats = speculative_generate(target, draft, prompt, 2, gamma=2, temperature=1.0, generator=g)
        counts[tuple(out[0, 2:].tolist())] += 1
        alphas.append(stats.acceptance_rate)
    keys = list(itertools.product(range(V), range(V)))
    obs = np.array([counts[k] for k in keys], float)
    exp = np.array([exact[k] for k in keys])
    exp = exp / exp.sum() * n
    assert exp.min() > 5 and chisquare(obs, exp).pvalue > 0.001, (obs, exp.round(1))
    assert 0.05 < np.mean(alphas) < 0.95  # the draft is neither useless nor the target
    # the draft's own distribution is far from the target's: sampling from it alone fails the same test
    with torch.no_grad():
        q1 = draft(prompt).logits[0, -1].softmax(-1)
    first = np.array([sum(counts[(a, b)] for b in range(V)) for a in range(V)], float)
    q1, p1 = (v.double().numpy() for v in (q1, p1))
    assert chisquare(first, q1 / q1.sum() * n).pvalue < 1e-6 and chisquare(first, p1 / p1.sum() * n).pvalue > 0.001


def test_expected_tokens_per_pass_matches_simulated_acceptance():
    """Leviathan et al. eq. 1 against a direct simulation of i.i.d. acceptances."""
    rng = np.random.default_rng(0)
    for alpha, gamma in ((0.3, 2), (0.7, 4), (0.9, 8)):
        acc = rng.random((200_000, gamma)) < alpha
        accepted = np.where(acc.all(1), gamma, acc.argmin(1))  # the first rejection stops the round
        assert abs((accepted + 1).mean() - expected_tokens_per_pass(alpha, gamma)) < 0.02


def test_loss_through_a_cache_equals_the_full_forward_and_int8_costs_little():
    from scalelab.economics.memory import kv_cache_bytes
    from scalelab.model.kvquant import cached_loss, new_int8_cache

    model = _model(4, vocab=64, d=32, layers=2, scale=10)
    windows = torch.randint(0, 64, (6, 65), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(windows[:, :-1], targets=windows[:, 1:]).loss.item()
    fp32 = cached_loss(model, windows, lambda m, b: m.new_cache(b), chunk=16)
    int8 = cached_loss(model, windows, new_int8_cache, chunk=16)
    assert abs(fp32 - full) < 1e-5  # chunked prefill through the cache is the same computation
    assert 0 < abs(int8 - full) < 0.01 * full  # quantized keys and values: close, not equal
    cache = new_int8_cache(model, 1)
    S, hd = model.cfg.max_seq_len, model.cfg.head_dim
    assert cache.nbytes() == kv_cache_bytes(model.cfg, S, bytes_per=1) * (1 + 4 / hd)  # int8 + an fp32 scale per vector
    fp = model.new_cache(1)
    assert fp.k.nbytes + fp.v.nbytes == kv_cache_bytes(model.cfg, S, bytes_per=4)
