"""Model: exact counts, MoE against references, init, KV cache."""

import json
import math

import pytest
import torch

from conftest import ZOO
from scalelab.errors import UserError
from scalelab.model import MLAConfig, ModelConfig, MoEConfig
from scalelab.model.hf import config_from_hf
from scalelab.model.layers import SwiGLU
from scalelab.model.moe import MoE
from scalelab.model.transformer import Transformer, generate

VARIANTS = [
    ModelConfig(d_model=64, n_layers=2, n_heads=4, vocab_size=300),
    ModelConfig(d_model=96, n_layers=3, n_heads=6, n_kv_heads=2, vocab_size=301, tie_embeddings=False),
    ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=1, head_dim=24, d_ff=100, vocab_size=128),
    ModelConfig(d_model=64, n_layers=2, n_heads=4, vocab_size=200, moe=MoEConfig(num_experts=4, top_k=2)),
    ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=200, tie_embeddings=False,
                moe=MoEConfig(num_experts=8, top_k=2, d_expert=32, num_shared_experts=2)),
    # today's options: q/k/v biases, q/k norms (per head, over all heads), a sliding window, DeepSeek-style
    # MoE (fine-grained + shared experts after a dense first layer, softmax weights not renormalised)
    ModelConfig(d_model=64, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=150, qkv_bias=True, qk_norm="head",
                sliding_window=6, moe=MoEConfig(num_experts=8, top_k=2, d_expert=16, num_shared_experts=1,
                                                first_dense_layers=1, renormalize=False)),
    ModelConfig(d_model=64, n_layers=2, n_heads=4, vocab_size=150, qk_norm="full", tie_embeddings=False),
    # multi-head latent attention, with and without a query bottleneck, the second with DeepSeek-MoE
    ModelConfig(d_model=64, n_layers=2, n_heads=4, vocab_size=150, mla=MLAConfig(kv_lora_rank=32)),
    ModelConfig(d_model=64, n_layers=3, n_heads=4, head_dim=16, vocab_size=150, tie_embeddings=False,
                mla=MLAConfig(kv_lora_rank=24, q_lora_rank=40, rope_head_dim=8),
                moe=MoEConfig(num_experts=4, top_k=2, d_expert=16, num_shared_experts=1, first_dense_layers=1,
                              renormalize=False)),
]


@pytest.mark.parametrize("cfg", VARIANTS, ids=lambda c: f"d{c.d_model}-moe{bool(c.moe)}-tie{c.tie_embeddings}"
                         f"{'-' + c.qk_norm if c.qk_norm else ''}{'-mla' if c.mla else ''}")
def test_analytic_counts_equal_numel(cfg):
    model = Transformer(cfg)
    assert cfg.num_params_total == sum(p.numel() for p in model.parameters())
    emb = model.tok_emb.weight.numel() * (1 if cfg.tie_embeddings else 2)
    assert cfg.num_params_embedding == emb
    assert cfg.num_params_non_embedding == cfg.num_params_total - emb
    if cfg.moe is None:
        assert cfg.num_params_active == cfg.num_params_total
    else:
        m = cfg.moe  # the routed experts' tensors, wherever the model has them: a token uses top_k of E
        routed = sum(getattr(layer.mlp, w).numel() for layer in model.layers if isinstance(layer.mlp, MoE)
                     for w in ("w1", "w2", "w3"))
        assert cfg.num_params_active == cfg.num_params_total - routed * (m.num_experts - m.top_k) // m.num_experts


def test_published_counts():
    llama = config_from_hf(ZOO / "llama-2-7b.json")
    assert llama.num_params_total == 6_738_415_616
    mixtral = config_from_hf(ZOO / "mixtral-8x7b.json")
    assert mixtral.num_params_total == 46_702_792_704
    assert mixtral.num_params_active == 12_879_925_248
    assert mixtral.n_kv_heads == 8 and mixtral.moe.top_k == 2


def test_flops_exact_accounts_for_attention():
    cfg = ModelConfig(d_model=256, n_layers=4, n_heads=4, vocab_size=1000, max_seq_len=512)
    # Without the attention term, the exact count is 6 x (matmul parameters) = 6 x (non-embedding
    # matrices + output head): embeddings lookups and norm gains cost no matmul FLOPs.
    norms = cfg.n_layers * 2 * cfg.d_model + cfg.d_model
    matmul_params = cfg.num_params_non_embedding - norms + cfg.vocab_size * cfg.d_model
    attn = 3 * cfg.n_layers * 2 * 2 * 512 * cfg.q_dim
    assert cfg.flops_per_token_exact(512) == 6 * matmul_params + attn
    assert cfg.flops_per_token_exact(512, causal=True) < cfg.flops_per_token_exact(512)


def test_moe_one_expert_top1_equals_dense_swiglu():
    torch.manual_seed(0)
    d, f = 32, 48
    moe = MoE(d, MoEConfig(num_experts=1, top_k=1, d_expert=f, lb_coef=0, z_coef=0))
    dense = SwiGLU(d, f)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.2)
    with torch.no_grad():
        dense.w1.weight.copy_(moe.w1[0])
        dense.w3.weight.copy_(moe.w3[0])
        dense.w2.weight.copy_(moe.w2[0])
    x = torch.randn(3, 5, d, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y_moe, _ = moe(x)
    y_dense = dense(x2)
    torch.testing.assert_close(y_moe, y_dense, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(y_moe)
    y_moe.backward(g)
    y_dense.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(moe.w1.grad[0], dense.w1.weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(moe.w2.grad[0], dense.w2.weight.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dispatch", ["sorted", "grouped"])
@pytest.mark.parametrize("capacity,idle_expert", [(None, False), (1.0, False), (0.5, False), (None, True), (0.5, True)])
def test_fast_dispatch_matches_reference(capacity, idle_expert, dispatch):
    """An idle expert gets no tokens at all: an empty slice (an empty group), zero gradients. The
    grouped path computes in bf16 (what it is for, on CUDA): its tolerance is bf16's, 8 bits."""
    if dispatch == "grouped" and not hasattr(torch, "_grouped_mm"):
        pytest.skip("this torch has no grouped_mm")
    torch.manual_seed(1)
    cfg = MoEConfig(num_experts=6, top_k=2, d_expert=40, num_shared_experts=1, capacity_factor=capacity)
    fast = MoE(32, cfg, dispatch=dispatch)
    for p in fast.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(4, 9, 32)
    if idle_expert:  # feature 0 is always 5 and only expert 5 reads it, with weight -100: never in the top 2
        x[..., 0] = 5.0
        with torch.no_grad():
            fast.router.weight[:, 0] = 0.0
            fast.router.weight[5, 0] = -100.0
    ref = MoE(32, cfg, dispatch="reference")
    ref.load_state_dict(fast.state_dict())
    if idle_expert:
        assert 5 not in fast.route(x.reshape(-1, 32))[3]
    y1, a1 = fast(x)
    y2, a2 = ref(x)
    bf16 = dispatch == "grouped"
    torch.testing.assert_close(y1, y2, rtol=2e-2 if bf16 else 1e-5, atol=3e-2 * y2.abs().max().item() if bf16 else 1e-5)
    torch.testing.assert_close(a1.lb_loss, a2.lb_loss)
    if capacity is not None and capacity < 1:
        assert float(a1.dropped_frac) > 0  # the capacity limit really dropped something
    # gradients agree too
    y1.square().sum().backward()
    y2.square().sum().backward()
    for (n, p1), p2 in zip(fast.named_parameters(), ref.parameters()):
        # gradients reach ~1e3 here: the absolute tolerance follows the tensor's scale (fp32 sums in
        # another order differ by ~1e-7 of it; a wrong dispatch would differ by O(1))
        atol = (3e-2 if bf16 else 1e-6) * max(1.0, p2.grad.abs().max().item())
        torch.testing.assert_close(p1.grad, p2.grad, rtol=3e-2 if bf16 else 1e-4, atol=atol, msg=n)


def test_load_balancing_loss_analytic_values():
    E = 8
    moe = MoE(16, MoEConfig(num_experts=E, top_k=2, d_expert=8))
    torch.nn.init.zeros_(moe.router.weight)  # uniform router probabilities P_i = 1/E
    _, aux = moe(torch.randn(2, 16, 16))
    # E * sum_i f_i * (1/E) = sum_i f_i = 1 whatever the dispatch
    assert aux.lb_loss.item() == pytest.approx(1.0, abs=1e-6)
    assert aux.z_loss.item() == pytest.approx(math.log(E) ** 2, rel=1e-6)
    # all tokens routed to one expert with probability ~1: lb = E * 1 * 1 = E
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0, :] = 50.0
    x = torch.ones(1, 4, 16)
    cfg1 = MoE(16, MoEConfig(num_experts=E, top_k=1, d_expert=8))
    cfg1.load_state_dict(moe.state_dict())
    _, aux1 = cfg1(x)
    assert aux1.lb_loss.item() == pytest.approx(E, rel=1e-4)


def test_initial_loss_close_to_ln_vocab():
    torch.manual_seed(0)
    for cfg in (VARIANTS[0], VARIANTS[1], VARIANTS[4]):
        model = Transformer(cfg)
        x = torch.randint(0, cfg.vocab_size, (4, 32))
        y = torch.randint(0, cfg.vocab_size, (4, 32))
        loss = model(x, targets=y).loss.item()
        assert abs(loss - math.log(cfg.vocab_size)) < 0.1


@pytest.mark.parametrize("cfg", [VARIANTS[1], VARIANTS[4], VARIANTS[5], VARIANTS[8]],
                         ids=["gqa", "moe", "window-deepseek-moe", "mla-deepseek-moe"])
def test_greedy_with_and_without_cache_identical(cfg):
    torch.manual_seed(3)
    model = Transformer(cfg)
    for n, p in model.named_parameters():  # larger weights make the argmax sensitive to any mistake
        if p.dim() > 1:
            # routers larger still: with router weights at 0.3 a 2nd/3rd-expert near-tie (2e-7 apart)
            # let float rounding alone pick different experts with and without the cache
            torch.nn.init.normal_(p, std=3.0 if "router" in n else 0.3)
    prompt = torch.randint(0, cfg.vocab_size, (2, 5))
    a = generate(model, prompt, 20, temperature=0, use_cache=True)
    b = generate(model, prompt, 20, temperature=0, use_cache=False)
    assert a.shape == (2, 25)
    if cfg.moe is not None:  # the premise: every top-k choice is clear of float noise
        margins = []
        hooks = [layer.mlp.router.register_forward_hook(
            lambda m, i, out: margins.append(out.sort(-1, descending=True).values.diff(dim=-1)[..., 1].abs()))
            for layer in model.layers if hasattr(layer.mlp, "router")]
        with torch.no_grad():
            model(a)
        for h in hooks:
            h.remove()
        assert torch.cat([m.reshape(-1) for m in margins]).min() > 1e-3
    assert torch.equal(a, b)
    # the cached logits equal the full recomputation
    cache = model.new_cache(2)
    model(a[:, :10], cache=cache)
    step = model(a[:, 10:12], cache=cache).logits  # a 2-token chunk after a non-empty cache
    full = model(a[:, :12]).logits[:, 10:12]
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)  # logits of ~10: fp32 noise ~1e-5


def test_mla_decoding_reads_only_the_latent_and_equals_the_expanded_attention():
    """The absorbed path (queries and outputs through W_uk, W_uv; attention over the cached latent) against
    the expanded one (per-head K and V through SDPA), and the cache holds C + r numbers per token and layer."""
    torch.manual_seed(1)
    cfg = VARIANTS[7]
    model = Transformer(cfg).eval()
    x = torch.randint(0, cfg.vocab_size, (2, 24))
    cache = model.new_cache(2)
    with torch.no_grad():
        expanded = model(x).logits
        absorbed = model(x, cache=cache).logits  # prefill through the absorbed path
    torch.testing.assert_close(absorbed, expanded, rtol=1e-4, atol=1e-4)
    per_token = sum(t[0, 0, 0].numel() for t in (cache.c, cache.k_rope))  # layer 0, batch 0, position 0
    assert per_token * cfg.n_layers == cfg.kv_cache_elements_per_token == cfg.n_layers * (32 + 8)


def test_sliding_window_wider_than_the_sequence_is_full_attention_and_narrower_is_the_masked_reference():
    torch.manual_seed(0)
    base = ModelConfig(d_model=32, n_layers=1, n_heads=2, vocab_size=50, max_seq_len=64)  # one layer: the window
    # is the whole receptive field (stacked layers widen it)
    full = Transformer(base).eval()
    wide = Transformer(ModelConfig(**{**base.to_dict(), "sliding_window": 64})).eval()
    narrow = Transformer(ModelConfig(**{**base.to_dict(), "sliding_window": 4})).eval()
    wide.load_state_dict(full.state_dict())
    narrow.load_state_dict(full.state_dict())
    x = torch.randint(0, 50, (2, 30))
    with torch.no_grad():
        assert torch.equal(wide(x).logits, full(x).logits)
        y = narrow(x).logits
        # each position sees only its last 4 tokens: the logits at t equal those of the model on x[t-3..t]
        # alone once RoPE's relative positions are accounted for (RoPE is relative: a shifted window
        # gives the same attention scores), so compare with the full model on each 4-token window
        for t in (3, 17, 29):
            ref = full(x[:, t - 3:t + 1]).logits[:, -1]
            torch.testing.assert_close(y[:, t], ref, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(y[:, 29], full(x).logits[:, 29], atol=1e-3)


@pytest.mark.parametrize("kw,msg", [
    (dict(n_heads=6, n_kv_heads=4), "not divisible"),
    (dict(qk_norm="layer"), "model.qk_norm must be"),
    (dict(sliding_window=-1), "sliding_window must be >= 0"),
    (dict(mla=MLAConfig(), n_kv_heads=2), "model.mla replaces the attention"),
    (dict(n_layers=2, moe=MoEConfig(first_dense_layers=2)), "leaves no MoE layer"),
    (dict(d_model=0), "model.d_model"),
    (dict(head_dim=7), "even"),
    (dict(moe=MoEConfig(num_experts=4, top_k=5)), "top_k"),
])
def test_bad_model_configs(kw, msg):
    with pytest.raises(UserError, match=msg):
        ModelConfig(**{"d_model": 64, "n_heads": 4, **kw}).validate()


def test_counts_json_roundtrip():
    cfg = VARIANTS[4]
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize("chunk", [7, 512, None])  # None: the default, sized to the vocabulary
def test_fused_linear_cross_entropy_equals_reference(chunk):
    from scalelab.model.loss import linear_cross_entropy

    torch.manual_seed(0)
    h = torch.randn(37, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    t = torch.randint(0, 50, (37,))
    ref = torch.nn.functional.cross_entropy(h @ w.t(), t)
    ref.backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad, w.grad = None, None
    got = linear_cross_entropy(h, w, t, chunk=chunk)
    (got * 3.0).backward()  # the incoming gradient is honoured
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(h.grad, 3 * gh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.grad, 3 * gw, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, t, chunk=chunk), ref, rtol=1e-6, atol=1e-6)


def test_loss_chunk_sizes():
    """Chunks hold ~1M logits on CPU (4 MB, L2-sized), ~16M on CUDA, within [64, 1024] tokens; under
    torch.compile the loop unrolls into the graph, so it is cut to at most 16 chunks, 4 on a CPU (same values)."""
    from scalelab.model.loss import default_chunk, linear_cross_entropy

    assert [default_chunk(v, "cpu") for v in (512, 4096, 32000, 128256)] == [1024, 256, 256, 256]
    assert [default_chunk(v, "cuda") for v in (4096, 32000, 128256)] == [8192, 4096, 1024]
    torch.manual_seed(0)
    h, w = torch.randn(37, 16, requires_grad=True), torch.randn(50, 16, requires_grad=True)
    t = torch.randint(0, 50, (37,))
    ref = torch.nn.functional.cross_entropy(h @ w.t(), t)
    counts = []

    def count_chunks(gm, example_inputs):  # a dynamo backend that counts the unrolled log-softmaxes
        counts.append(sum("log_softmax" in str(n.target) for m in gm.modules() if isinstance(m, torch.fx.GraphModule)
                          for n in m.graph.nodes))
        return gm.forward

    got = torch.compile(lambda *a: linear_cross_entropy(*a, chunk=1), backend=count_chunks)(h, w, t)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    assert counts == [4]  # on a CPU ceil(37 / 4) = 10 tokens per chunk, not 37 one-token chunks


def test_model_loss_paths_agree():
    """The fused loss (training path) equals cross-entropy on materialised logits, with tied weights."""
    torch.manual_seed(0)
    cfg = VARIANTS[0]
    model = Transformer(cfg)
    x = torch.randint(0, cfg.vocab_size, (2, 24))
    y = torch.randint(0, cfg.vocab_size, (2, 24))
    fused = model(x, targets=y, return_logits=False).loss
    plain = model(x, targets=y, return_logits=True).loss
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    fused.backward()
    g1 = model.tok_emb.weight.grad.clone()
    model.zero_grad()
    plain.backward()
    torch.testing.assert_close(g1, model.tok_emb.weight.grad, rtol=1e-4, atol=1e-6)
