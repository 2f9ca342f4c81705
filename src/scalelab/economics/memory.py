"""Memory for training and serving, analytic.

Training state per parameter (bytes: weights, gradients, optimizer; the ZeRO paper's accounting,
Rajbhandari et al. 2020, with K = 12 for mixed-precision Adam):

    fp32               4 + 4 + 8   = 16   fp32 weights and grads, Adam m and v
    mixed              2 + 2 + 12  = 16   bf16 weights and grads; fp32 master, m, v
    mixed-fp32-grads   2 + 4 + 12  = 18   gradients accumulated in fp32
    adam8bit           2 + 2 + 6   = 10   fp32 master + 8-bit m and v (Dettmers et al. 2022)
    bf16               2 + 2 + 4   = 8    everything in bf16

ZeRO over ``dp`` data-parallel ranks shards the optimizer (stage 1), then the gradients (2), then the
weights (3; = FSDP full sharding).

Activations per layer (Korthikanti et al. 2022, "Reducing activation recomputation", Sec. 4): their
GPT block stores 34 s b h + 5 a s^2 b bytes at 16 bits (LayerNorm, GeLU 4h MLP, dropout masks, the
s^2 attention scores). Our block is adapted term by term: RMSNorm inputs 2 x 2h, attention 2h (norm
output) + 2q (Q) + 4kv (K, V) + 2q (output), SwiGLU 2h + 8f (gate, up, silu(gate), product), no
dropout; with flash attention there is no s^2 term. Selective recomputation drops the s^2 term
(flash already does); full recomputation keeps only each layer's input, 2h.
"""

from __future__ import annotations

from scalelab.errors import UserError
from scalelab.model.arch import Arch, Layer, as_arch
from scalelab.model.config import ModelConfig

REGIMES = {  # bytes per parameter: (weights, gradients, optimizer state)
    "fp32": (4, 4, 8),
    "mixed": (2, 2, 12),
    "mixed-fp32-grads": (2, 4, 12),
    "adam8bit": (2, 2, 6),
    "bf16": (2, 2, 4),
}
WEIGHT_BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "int8": 8, "int6": 6, "int5": 5, "int4": 4, "int3": 3, "int2": 2}


def train_state_bytes(num_params: float, regime: str = "mixed", zero: int = 0, dp: int = 1) -> dict:
    if regime not in REGIMES:
        raise UserError(f"unknown precision regime {regime!r}; choose from {', '.join(REGIMES)}")
    if zero not in (0, 1, 2, 3) or dp < 1:
        raise UserError(f"zero must be 0-3 (got {zero}) and dp >= 1 (got {dp})", arg="zero")
    w, g, o = (b * num_params for b in REGIMES[regime])
    if zero >= 1:
        o /= dp
    if zero >= 2:
        g /= dp
    if zero >= 3:
        w /= dp
    return {"weights": w, "gradients": g, "optimizer": o, "total": w + g + o}


def activation_elements_per_token_per_layer(cfg: ModelConfig | Arch, seq_len: int, recompute: str = "none",
                                            flash: bool = True, layer: Layer | None = None) -> float:
    """16-bit activation *bytes* / 2, per token per layer, for our block (see module docstring); other
    architectures by the same terms at their widths (MLA: K and V per head; GELU MLP: up and its output)."""
    a = as_arch(cfg)
    layer = layer or a.layers[0]
    at = a.attention
    h, q, kv = a.d_model, at.n_heads * at.head_dim, (at.n_heads if at.mla else at.n_kv_heads) * at.head_dim
    if recompute == "full":
        return h
    per_ff = 4 if a.mlp.gated else 2  # gate, up, act(gate), product | up, act(up)
    if not layer.moe:
        mlp = h + per_ff * a.mlp.d_ff
    else:  # each token's k routed copies (and shared experts) store their own activations
        e = a.experts
        k = e.top_k + -(-e.shared_d_ff // e.d_expert)
        mlp = h + k * h + 4 * e.d_expert * k + e.num_experts  # input, gathered copies, experts, router
    attn = h + q + 2 * kv + q
    if not flash and recompute == "none":
        attn += at.n_heads * seq_len  # softmax probabilities
    return 2 * h + attn + mlp  # + RMSNorm inputs


def korthikanti_bytes_per_layer(seq_len: int, batch: int, d_model: int, n_heads: int,
                                recompute: str = "none") -> float:
    """The paper's GPT block (no tensor/sequence parallelism): s b h (34 + 5 a s / h) bytes."""
    s, b, h, a = seq_len, batch, d_model, n_heads
    if recompute == "full":
        return 2 * s * b * h
    if recompute == "selective":
        return 34 * s * b * h
    return s * b * h * (34 + 5 * a * s / h)


def activation_bytes(cfg: ModelConfig | Arch, seq_len: int, batch: int, recompute: str = "none", flash: bool = True,
                     bytes_per_activation: int = 2) -> dict:
    if recompute not in ("none", "selective", "full"):
        raise UserError("recompute must be none, selective or full")
    a = as_arch(cfg)
    per_layer = [activation_elements_per_token_per_layer(a, seq_len, recompute, flash, layer) * seq_len * batch
                 * bytes_per_activation for layer in a.layers]
    layers = sum(per_layer)
    # the output head: logits in activation precision + fp32 softmax for the loss
    logits = seq_len * batch * a.vocab_size * (bytes_per_activation + 4)
    return {"per_layer": layers / len(per_layer), "layers": layers, "logits": logits,
            "total": layers + logits + seq_len * batch * a.d_model * bytes_per_activation}


def weights_bytes(num_params: float, dtype: str = "bf16", group_size: int = 128, zero_point: bool = False) -> float:
    """Weights at ``dtype``; below 16 bits each group of ``group_size`` weights also stores an fp16
    scale (and a zero point when asymmetric): 4-bit, g=128 costs 4.125 bits per weight."""
    if dtype not in WEIGHT_BITS:
        raise UserError(f"dtype {dtype!r} is unknown; choose from {', '.join(WEIGHT_BITS)}", arg="dtype")
    bits = WEIGHT_BITS[dtype]
    if bits < 16:
        bits += 16.0 / group_size * (2 if zero_point else 1)
    return num_params * bits / 8.0


def kv_cache_bytes_per_token(cfg: ModelConfig | Arch, bytes_per: int = 2) -> int:
    """What every layer caches per token: K and V (2 * n_kv_heads * head_dim: MHA, GQA and MQA alike), or
    MLA's latent and shared RoPE key (kv_lora_rank + rope_head_dim), times bytes per element."""
    return as_arch(cfg).kv_cache_elements_per_token * bytes_per


def kv_cache_bytes(cfg: ModelConfig | Arch, context: int, batch: int = 1, window: int | None = None,
                   bytes_per: int = 2) -> int:
    """Per batch of sequences; sliding-window and chunked layers cache at most their span, and a
    ``window`` caps every layer."""
    return as_arch(cfg).kv_cache_elements(min(context, window or context)) * bytes_per * batch
