"""Olsson et al.'s head scores on hand-built cases, and the attention patterns against the model's own."""

import torch

from scalelab.model.config import ModelConfig
from scalelab.model.heads import (
    attention_patterns,
    copying_scores,
    in_context_score,
    prefix_matching_scores,
    repeated_tokens,
)
from scalelab.model.transformer import Transformer


def _tiny(**kw) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=2, max_seq_len=64, **kw)).eval()


def test_prefix_matching_on_hand_built_patterns():
    n, T = 8, 16
    induction = torch.zeros(T, T)
    previous = torch.zeros(T, T)
    for i in range(T):
        previous[i, max(i - 1, 0)] = 1.0
        induction[i, i - n + 1 if i >= n else 0] = 1.0  # position n + j attends to j + 1
    uniform = torch.ones(T, T).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)
    heads = torch.stack([induction, previous, uniform])[None]  # (B=1, H=3, T, T)
    s = prefix_matching_scores([heads], n)[0]
    assert s[0] == 1.0 and s[1] == 0.0
    assert abs(s[2] - torch.tensor([1 / (n + j + 1) for j in range(n - 1)]).mean()) < 1e-6


def test_copying_score_is_plus_one_for_a_copying_head_and_minus_one_for_its_negation():
    model = _tiny(tie_embeddings=False)
    a = model.layers[0].attn
    with torch.no_grad():
        E = torch.randn(32, 32)
        model.tok_emb.weight.copy_(E)
        model.lm_head.weight.copy_(E)  # W_U W_O W_V W_E^T = E P E^T with P a projection: PSD
        a.wv.weight.zero_()
        a.wo.weight.zero_()
        a.wv.weight[:16, :16] = torch.eye(16)  # head 0 reads dims 0-15 and writes them back
        a.wo.weight[:16, :16] = torch.eye(16)
        a.wv.weight[16:, 16:] = torch.eye(16)  # head 1 writes the negation
        a.wo.weight[16:, 16:] = -torch.eye(16)
    s = copying_scores(model)[0]
    assert abs(s[0] - 1) < 1e-6 and abs(s[1] + 1) < 1e-6


def test_attention_patterns_reproduce_the_layers_output():
    model = _tiny(n_kv_heads=1)  # GQA: the shared key head is repeated for both query heads
    idx = repeated_tokens(3, 10, 32, seed=0)
    pats = attention_patterns(model, idx)
    assert len(pats) == 2 and pats[0].shape == (3, 2, 20, 20)
    assert torch.allclose(pats[0].sum(-1), torch.ones(3, 2, 20)) and pats[0].triu(1).abs().max() == 0
    block = model.layers[0]
    h = block.attn_norm(model.tok_emb(idx))
    v = block.attn.wv(h).view(3, 20, 1, 16).transpose(1, 2).repeat_interleave(2, dim=1)  # (B, H, T, hd)
    y = block.attn.wo((pats[0] @ v).transpose(1, 2).reshape(3, 20, 32))
    with torch.no_grad():
        want = block.attn(h, model.rope_cos[:20], model.rope_sin[:20])
    assert torch.allclose(y, want, atol=1e-5)  # the patterns rotate q and k as the layer does


def test_in_context_score_is_late_minus_early_loss():
    losses = torch.cat([torch.full((10,), 3.0), torch.full((10,), 2.0)])
    assert in_context_score(losses, (0, 10), (10, 20)) == -1.0
