"""Exact accounting for decoder-only transformers of every common shape, from the architecture alone.

`Arch` describes a decoder as the published models build it (the Hugging Face modules of Llama,
Mistral, Mixtral, Qwen2/2.5/3, Qwen3-MoE, DeepSeek-V2/V3, Gemma 2/3, Phi-3, OLMo-2, OLMoE, GPT-2,
GPT-NeoX/Pythia and Llama 4): attention (MHA/GQA/MQA with optional q/k/v and output biases and
q/k norms, or DeepSeek's multi-head latent attention), a dense MLP (gated or not, with or without
biases), routed experts with shared experts on some layers, per-layer sliding windows and chunks,
LayerNorm or RMSNorm, learned positions, tied or untied embeddings. ``model/hf_arch.py`` reads one
from a ``config.json``; scalelab's own `ModelConfig` is one (``ModelConfig.arch()``). Every count is
tested equal to the parameters of the transformers model built on the meta device from the same config.

Conventions are `model/config.py`'s: ``num_params_embedding`` = the input embedding + learned position
embeddings + the output head when untied; ``num_params_active`` = what one token touches (dense
parts, both vocabulary matrices, routers, shared experts, top_k routed experts); FLOPs per token count
every matmul (forward + backward = 3x forward), attention over the context that each layer sees.

Attention per token and layer at context t (Kaplan et al. 2020, Table 1; Hoffmann et al. 2022, App. F):
QK^T costs 2 * n_heads * qk_head_dim * ctx and AV 2 * n_heads * v_head_dim * ctx FLOPs, where ctx is
t (the full square, as both papers count), a sliding window w attends min(t, w) positions and a chunk
c min(t, c); ``causal=True`` counts the positions actually attended, averaged over the sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Attention:
    n_heads: int
    n_kv_heads: int
    head_dim: int
    """the q/k head dimension (MLA: qk_nope_head_dim + qk_rope_head_dim)."""
    v_head_dim: int = 0
    """0 = head_dim."""
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: str = ""
    """"" none; "head": one weight of head_dim each for q and k (Qwen3, Gemma 3); "full": over all
    heads (OLMo-2, OLMoE: n_heads*head_dim and n_kv_heads*head_dim); "l2": a weightless L2 norm (Llama 4)."""
    q_lora_rank: int = 0
    """MLA (DeepSeek-V2/V3): the rank of the query compression (0 = a full query projection)."""
    kv_lora_rank: int = 0
    """MLA: the latent that the KV cache stores; 0 = standard attention."""
    rope_head_dim: int = 0
    """MLA: the decoupled RoPE key dimension shared by all heads (cached beside the latent)."""
    mla_bias: bool = False
    """MLA: biases on q_a, kv_a and o projections (DeepSeek's attention_bias)."""

    def __post_init__(self) -> None:
        if self.v_head_dim == 0:
            object.__setattr__(self, "v_head_dim", self.head_dim)

    @property
    def mla(self) -> bool:
        return self.kv_lora_rank > 0

    def matmul_params(self, d: int) -> int:
        """Weights of the projections (what the forward pass multiplies by)."""
        h, kv, hd, vd = self.n_heads, self.n_kv_heads, self.head_dim, self.v_head_dim
        if not self.mla:
            return d * h * hd + d * kv * hd + d * kv * vd + h * vd * d
        nope = hd - self.rope_head_dim
        q = d * h * hd if not self.q_lora_rank else d * self.q_lora_rank + self.q_lora_rank * h * hd
        kv_a = d * (self.kv_lora_rank + self.rope_head_dim)
        kv_b = self.kv_lora_rank * h * (nope + vd)
        return q + kv_a + kv_b + h * vd * d

    def other_params(self, d: int) -> int:
        """Biases and norm weights inside the attention block."""
        h, kv, hd = self.n_heads, self.n_kv_heads, self.head_dim
        if self.mla:
            norms = self.kv_lora_rank + self.q_lora_rank  # kv_a_layernorm, q_a_layernorm
            bias = (self.q_lora_rank + self.kv_lora_rank + self.rope_head_dim + d) if self.mla_bias else 0
            return norms + bias
        bias = (h * hd + kv * hd + kv * self.v_head_dim) * self.qkv_bias + d * self.o_bias
        norm = {"": 0, "l2": 0, "head": 2 * hd, "full": h * hd + kv * hd}[self.qk_norm]
        return bias + norm

    def kv_cache_elements_per_token(self) -> int:
        """What one layer caches per token: K and V per KV head, or MLA's latent + shared RoPE key."""
        if self.mla:
            return self.kv_lora_rank + self.rope_head_dim
        return self.n_kv_heads * (self.head_dim + self.v_head_dim)

    def score_flops(self, ctx: float) -> float:
        """Forward FLOPs of QK^T and AV for one query over ``ctx`` keys."""
        return 2.0 * self.n_heads * (self.head_dim + self.v_head_dim) * ctx


@dataclass(frozen=True)
class MLP:
    d_ff: int
    gated: bool = True
    """SwiGLU/GeGLU: gate, up and down (3 matrices); else up and down (GPT-2, GPT-NeoX)."""
    bias: bool = False

    def matmul_params(self, d: int) -> int:
        return (3 if self.gated else 2) * d * self.d_ff

    def other_params(self, d: int) -> int:
        return ((2 if self.gated else 1) * self.d_ff + d) * self.bias


@dataclass(frozen=True)
class Experts:
    num_experts: int
    top_k: int
    d_expert: int
    shared_d_ff: int = 0
    """width of the always-on shared expert MLP (DeepSeek: n_shared_experts x moe_intermediate_size)."""
    shared_gate: bool = False
    """Qwen2-MoE's sigmoid gate on the shared expert (a d -> 1 projection)."""

    def matmul_params(self, d: int, experts: int) -> int:
        return d * self.num_experts + experts * 3 * d * self.d_expert + 3 * d * self.shared_d_ff + d * self.shared_gate


@dataclass(frozen=True)
class Layer:
    moe: bool = False
    window: int = 0
    """0 = full attention; w = attends the last w positions (sliding window)."""
    chunk: int = 0
    """c = attends within its chunk of c positions (Llama 4's chunked attention)."""

    def context(self, t: int, causal: bool) -> float:
        """Keys one query attends at sequence length t: at most t (full square) or, causal, the mean
        over positions 1..t of the positions actually visible."""
        span = self.window or self.chunk or t
        if not causal:
            return float(min(t, span))
        if self.chunk:
            full, rest = divmod(t, self.chunk)
            return (full * self.chunk * (self.chunk + 1) / 2 + rest * (rest + 1) / 2) / t
        w = min(span, t)  # positions i < w see i keys, the rest w
        return (w * (w + 1) / 2 + (t - w) * w) / t


@dataclass(frozen=True)
class Arch:
    d_model: int
    vocab_size: int
    attention: Attention
    mlp: MLP
    layers: tuple[Layer, ...]
    experts: Experts | None = None
    norm_bias: bool = False
    """LayerNorm (weight and bias: GPT-2, GPT-NeoX) rather than RMSNorm (weight only)."""
    norms_per_layer: int = 2
    """2 pre-norms; Gemma 2/3: 4 (pre and post around each block); OLMo-2: 2 post-norms."""
    positions: int = 0
    """learned position embeddings (GPT-2: n_positions); 0 = rotary."""
    tie_embeddings: bool = False
    max_seq_len: int = 2048
    model_type: str = "scalelab"
    notes: tuple[str, ...] = field(default=())
    """what the reader of a config assumed or left out (printed by `scalelab count`)."""

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    # ---- parameters ------------------------------------------------------------------------
    def _norm(self) -> int:
        return self.d_model * (2 if self.norm_bias else 1)

    def _layer_params(self, layer: Layer, active: bool) -> int:
        d, a = self.d_model, self.attention
        attn = a.matmul_params(d) + a.other_params(d)
        if layer.moe:
            e = self.experts
            ffn = e.matmul_params(d, e.top_k if active else e.num_experts)
        else:
            ffn = self.mlp.matmul_params(d) + self.mlp.other_params(d)
        return attn + ffn + self.norms_per_layer * self._norm()

    @property
    def num_params_embedding(self) -> int:
        return self.vocab_size * self.d_model * (1 if self.tie_embeddings else 2) + self.positions * self.d_model

    @property
    def num_params_non_embedding(self) -> int:
        return sum(self._layer_params(layer, False) for layer in self.layers) + self._norm()

    @property
    def num_params_active_non_embedding(self) -> int:
        return sum(self._layer_params(layer, True) for layer in self.layers) + self._norm()

    @property
    def num_params_total(self) -> int:
        return self.num_params_embedding + self.num_params_non_embedding

    @property
    def num_params_active(self) -> int:
        return self.num_params_embedding + self.num_params_active_non_embedding

    # ---- FLOPs -----------------------------------------------------------------------------
    def forward_flops_per_token(self, seq_len: int | None = None, causal: bool = False) -> int:
        """2 FLOPs per weight of every matmul a token passes through, the logits included (also when
        tied), plus attention over the context each layer sees."""
        t = self.max_seq_len if seq_len is None else seq_len
        d, a = self.d_model, self.attention
        total = 2.0 * d * self.vocab_size
        for layer in self.layers:
            e = self.experts
            ffn = e.matmul_params(d, e.top_k) if layer.moe else self.mlp.matmul_params(d)
            total += 2.0 * (a.matmul_params(d) + ffn) + a.score_flops(layer.context(t, causal))
        return int(round(total))

    def flops_per_token_exact(self, seq_len: int | None = None, causal: bool = False) -> int:
        return 3 * self.forward_flops_per_token(seq_len, causal)

    # ---- KV cache --------------------------------------------------------------------------
    def kv_cache_elements(self, context: int) -> int:
        """Elements cached for one sequence of ``context`` tokens: a windowed or chunked layer keeps
        at most its span (bytes = elements x bytes per element)."""
        per = self.attention.kv_cache_elements_per_token()
        return sum(per * min(context, layer.window or layer.chunk or context) for layer in self.layers)

    @property
    def kv_cache_elements_per_token(self) -> int:
        """Per token of context, every layer caching it (the figure before any window caps it)."""
        return self.n_layers * self.attention.kv_cache_elements_per_token()

    def counts(self, seq_len: int | None = None) -> dict:
        """Every analytic count (what `scalelab count --json` prints)."""
        t = self.max_seq_len if seq_len is None else seq_len
        out = {
            "num_params_total": self.num_params_total,
            "num_params_embedding": self.num_params_embedding,
            "num_params_non_embedding": self.num_params_non_embedding,
            "num_params_active": self.num_params_active,
            "num_params_active_non_embedding": self.num_params_active_non_embedding,
            "flops_per_token_6n": 6 * self.num_params_active,
            "flops_per_token_exact": self.flops_per_token_exact(t),
            "flops_per_token_exact_causal": self.flops_per_token_exact(t, causal=True),
            "seq_len": t,
            "active_convention": "all parameters one token uses: dense + both vocabulary matrices + "
                                 "router + shared + top_k routed experts",
            "kv_cache_bytes_per_token_bf16": 2 * self.kv_cache_elements_per_token,
            "kv_cache_bytes_per_sequence_bf16": 2 * self.kv_cache_elements(t),
            "architecture": self.describe(),
        }
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    def describe(self) -> str:
        """One line: the layers, the attention, the feed-forward."""
        a, L = self.attention, self.n_layers
        if a.mla:
            att = f"MLA {a.n_heads} heads, KV latent {a.kv_lora_rank} + RoPE key {a.rope_head_dim}"
        else:
            kind = "MHA" if a.n_kv_heads == a.n_heads else "MQA" if a.n_kv_heads == 1 else "GQA"
            att = f"{kind} {a.n_heads}/{a.n_kv_heads} heads x {a.head_dim}"
            att += " q/k/v bias" * a.qkv_bias + f" q/k norm ({a.qk_norm})" * bool(a.qk_norm)
        for kind, spans in (("sliding window", [x.window for x in self.layers if x.window]),
                            ("chunked", [x.chunk for x in self.layers if x.chunk])):
            if spans:
                att += f", {len(spans)} of {L} layers {kind} {'/'.join(map(str, sorted(set(spans))))}"
        moe = sum(x.moe for x in self.layers)
        ffn = f"{'gated' if self.mlp.gated else 'GELU'} MLP {self.mlp.d_ff}" if moe < L else ""
        if moe:
            e = self.experts
            ffn += (", " if ffn else "") + f"{moe} MoE layers: {e.num_experts} experts x {e.d_expert}, top {e.top_k}" \
                + f", shared {e.shared_d_ff}" * bool(e.shared_d_ff)
        return f"{self.model_type}: {L} layers, d {self.d_model}, {att}; {ffn}; vocab {self.vocab_size}" \
               f"{' tied' if self.tie_embeddings else ''}"


def as_arch(cfg) -> Arch:
    """An `Arch` as is, or scalelab's `ModelConfig` as one."""
    return cfg if isinstance(cfg, Arch) else cfg.arch()
