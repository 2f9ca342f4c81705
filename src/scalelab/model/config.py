"""Model configuration and exact analytic accounting.

Every count here is computed from the config alone, without allocating a single weight, and is tested
equal to ``sum(p.numel() for p in model.parameters())``.

Conventions (stated once, used everywhere):

* ``num_params_embedding`` counts the vocabulary matrices: the input embedding plus, when the output
  head is not tied to it, the output projection ("unembedding"). Kaplan et al. (2020) exclude these
  from N; Hoffmann et al. (2022) include them.
* ``num_params_active`` is what one token touches: all dense parameters, both vocabulary matrices,
  routers, shared experts and ``top_k`` routed experts per MoE layer. This is the convention Mistral
  uses for Mixtral-8x7B (12.9B active of 46.7B).
* ``flops_per_token_6n`` = 6 * num_params_active (Kaplan's C = 6ND with the active count).
* ``flops_per_token_exact`` counts every matmul of a training step (forward + backward = 3x
  forward): Q, K, V, O projections, attention scores and values over the context, SwiGLU, router,
  active experts and the output logits. The input embedding is a lookup (0 FLOPs); norms, softmax and
  activations are elementwise and left out (well under 1%), as in Chinchilla's Table A4.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace

from scalelab.errors import UserError
from scalelab.model.arch import MLP, Arch, Attention, Experts, Layer
from scalelab.typed import build


@dataclass(frozen=True)
class MoEConfig:
    """Mixture-of-Experts feed-forward layers (Switch / Mixtral style).

    capacity_factor: None means dropless (every routed token is computed); a number caps each
    expert at ceil(capacity_factor * tokens * top_k / num_experts) tokens and drops the rest.
    """

    num_experts: int = 8
    top_k: int = 2
    d_expert: int = 0
    """0 = same as the dense d_ff."""
    num_shared_experts: int = 0
    capacity_factor: float | None = None
    lb_coef: float = 0.01
    """Switch load-balancing loss coefficient (Fedus et al. 2021)."""
    z_coef: float = 1e-3
    """router z-loss coefficient (Zoph et al. 2022, ST-MoE)."""
    renormalize: bool = True
    """weights of the chosen top_k experts renormalised to sum to 1 (Mixtral, Qwen3-MoE); False keeps
    their softmax probabilities over all experts (DeepSeek-V2, OLMoE)."""
    first_dense_layers: int = 0
    """the first layers keep a dense SwiGLU of d_ff (DeepSeek's first_k_dense_replace: 1 in V2, 3 in V3)."""

    def validate(self) -> None:
        if self.num_experts < 1:
            raise UserError(f"model.moe.num_experts must be >= 1, got {self.num_experts}")
        if not 1 <= self.top_k <= self.num_experts:
            raise UserError(
                f"model.moe.top_k must be between 1 and num_experts={self.num_experts}, got {self.top_k}"
            )
        if self.d_expert < 0 or self.num_shared_experts < 0:
            raise UserError("model.moe.d_expert and model.moe.num_shared_experts must be >= 0")
        if self.capacity_factor is not None and self.capacity_factor <= 0:
            raise UserError("model.moe.capacity_factor must be > 0, or omitted for dropless routing")
        if self.lb_coef < 0 or self.z_coef < 0:
            raise UserError("model.moe.lb_coef and model.moe.z_coef must be >= 0")
        if self.first_dense_layers < 0:
            raise UserError("model.moe.first_dense_layers must be >= 0")


@dataclass(frozen=True)
class MLAConfig:
    """Multi-head latent attention (DeepSeek-V2/V3; model/mla.py): the KV cache keeps a kv_lora_rank-wide
    latent and a rope_head_dim-wide RoPE key per token and layer. Heads keep head_dim for the no-RoPE
    part of q/k and for v (DeepSeek-V3: kv_lora_rank 512, rope 64, head_dim 128, q_lora_rank 1536)."""

    kv_lora_rank: int = 64
    q_lora_rank: int = 0
    """0 = a full-rank query projection (DeepSeek-V2-Lite); > 0 = a bottleneck of that rank."""
    rope_head_dim: int = 0
    """0 = head_dim // 2."""

    def validate(self) -> None:
        if self.kv_lora_rank < 1 or self.q_lora_rank < 0 or self.rope_head_dim < 0 or self.rope_head_dim % 2:
            raise UserError("model.mla: kv_lora_rank >= 1, q_lora_rank >= 0 and an even rope_head_dim >= 0")


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only transformer: RMSNorm pre-norm, RoPE, grouped-query attention, SwiGLU."""

    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 0
    """0 = n_heads (multi-head attention); 1 = multi-query."""
    head_dim: int = 0
    """0 = d_model // n_heads."""
    d_ff: int = 0
    """0 = the SwiGLU rule: 8/3 d_model rounded up to a multiple of 64."""
    vocab_size: int = 4096
    max_seq_len: int = 256
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    moe: MoEConfig | None = None
    qkv_bias: bool = False
    """biases on the q, k and v projections (Qwen2)."""
    qk_norm: str = ""
    """RMSNorm on queries and keys before RoPE: "head" over each head's head_dim, one weight shared by
    the heads (Qwen3, Gemma 3); "full" over all heads at once (OLMo-2, OLMoE); "" none."""
    mla: MLAConfig | None = None
    """multi-head latent attention instead of grouped-query attention (n_kv_heads must equal n_heads)."""
    sliding_window: int = 0
    """0 = full causal attention; w = each token attends the last w positions, itself included
    (Mistral 7B: 4096). The KV cache keeps every position; the attention masks the older ones."""
    parametrization: str = "sp"
    """sp (standard) | mup: the maximal-update parametrization for Adam (Yang et al. 2022, "Tensor
    Programs V", Table 3; microsoft/mup's MuReadout and MuAdamW). With width multiplier m = d_model /
    mup_base_width, the hidden matrices (attention, MLP) start at std init_std / sqrt(m) and train
    at lr / m; embeddings and norm gains keep init_std and lr; the logits are multiplied by 1 / m; the
    attention scores by sqrt(mup_base_head_dim) / head_dim (1/d, not 1/sqrt(d)). At the base width
    muP is SP exactly, so an lr tuned there transfers to wider models. Dense models only."""
    mup_base_width: int = 0
    """muP: the d_model where muP equals SP (where the lr was tuned); 0 = this model's d_model."""
    mup_base_head_dim: int = 0
    """muP: the head_dim of the base model; 0 = this model's head_dim (a family that adds heads and
    keeps head_dim, as `ladder plan` does, needs no other)."""
    init_from: str = ""
    """a Hugging Face checkpoint folder to start from (Llama, Mistral, Mixtral, Qwen2/3, Qwen3-MoE, OLMoE,
    DeepSeek-V2: `model/hf.py` SUPPORTED): its config.json sets the
    architecture (model keys that disagree are an error; max_seq_len may be lowered), its safetensors
    the initial weights, its tokenizer.json the data's tokenizer (config.py `resolve_init_from`)."""

    # ---- derived shapes -------------------------------------------------------------------
    def __post_init__(self) -> None:
        # Fill the 0 = "derive it" fields so that every consumer sees concrete numbers.
        if self.n_kv_heads == 0:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.head_dim == 0 and self.n_heads > 0:
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        if self.d_ff == 0:
            object.__setattr__(self, "d_ff", swiglu_hidden(self.d_model))
        if self.moe is not None and self.moe.d_expert == 0:
            object.__setattr__(self, "moe", replace(self.moe, d_expert=self.d_ff))
        if self.mla is not None and self.mla.rope_head_dim == 0:
            object.__setattr__(self, "mla", replace(self.mla, rope_head_dim=self.head_dim // 2))
        if self.mup_base_width == 0:
            object.__setattr__(self, "mup_base_width", self.d_model)
        if self.mup_base_head_dim == 0:
            object.__setattr__(self, "mup_base_head_dim", self.head_dim)

    def validate(self) -> ModelConfig:
        for name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "vocab_size",
                     "max_seq_len"):
            if getattr(self, name) < 1:
                raise UserError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_heads % self.n_kv_heads:
            raise UserError(
                f"model.n_heads={self.n_heads} is not divisible by model.n_kv_heads={self.n_kv_heads}; "
                "pick n_kv_heads among the divisors of n_heads"
            )
        if self.head_dim % 2:
            raise UserError(f"model.head_dim must be even for RoPE, got {self.head_dim}")
        if self.rope_theta <= 0 or self.norm_eps <= 0 or self.init_std <= 0:
            raise UserError("model.rope_theta, model.norm_eps and model.init_std must be > 0")
        if self.moe is not None:
            self.moe.validate()
            if self.moe.first_dense_layers >= self.n_layers:
                raise UserError(f"model.moe.first_dense_layers={self.moe.first_dense_layers} leaves no MoE layer "
                                f"among n_layers={self.n_layers}")
        if self.mla is not None:
            self.mla.validate()
            if self.n_kv_heads != self.n_heads or self.qkv_bias or self.qk_norm or self.sliding_window:
                raise UserError("model.mla replaces the attention: leave n_kv_heads = n_heads and qkv_bias, qk_norm "
                                "and sliding_window unset")
        if self.parametrization not in ("sp", "mup"):
            raise UserError(f"model.parametrization must be sp or mup, got {self.parametrization!r}")
        if self.parametrization == "mup" and (self.moe is not None or self.mla is not None):
            raise UserError("model.parametrization=mup is for dense models here: drop model.moe/model.mla or use sp")
        if self.mup_base_width < 1 or self.mup_base_head_dim < 1:
            raise UserError("model.mup_base_width and model.mup_base_head_dim must be >= 1 (0 = this model's)")
        if self.qk_norm not in ("", "head", "full"):
            raise UserError(f"model.qk_norm must be '', 'head' or 'full', got {self.qk_norm!r}")
        if self.sliding_window < 0:
            raise UserError(f"model.sliding_window must be >= 0 (0 = full attention), got {self.sliding_window}")
        return self

    @property
    def width_mult(self) -> float:
        """muP's m = d_model / mup_base_width (1 under SP)."""
        return self.d_model / self.mup_base_width if self.parametrization == "mup" else 1.0

    @property
    def attn_scale(self) -> float | None:
        """The attention-score scale: None = 1/sqrt(head_dim) (SP); muP: sqrt(base head_dim) / head_dim."""
        return self.mup_base_head_dim ** 0.5 / self.head_dim if self.parametrization == "mup" else None

    def is_moe_layer(self, i: int) -> bool:
        return self.moe is not None and i >= self.moe.first_dense_layers

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    # ---- accounting: one implementation for every architecture (model/arch.py) --------------
    def arch(self) -> Arch:
        """This model as an `Arch`: RMSNorm pre-norms, rotary positions, SwiGLU, optional q/k/v biases,
        q/k norms and a sliding window, and on MoE layers a router, routed experts and
        ``num_shared_experts`` shared experts of d_expert each (built once per config)."""
        return _arch_of(self)

    def _build_arch(self) -> Arch:
        m = self.moe
        experts = None if m is None else Experts(m.num_experts, m.top_k, m.d_expert, m.num_shared_experts * m.d_expert)
        return Arch(d_model=self.d_model, vocab_size=self.vocab_size,
                    attention=self._attention(),
                    mlp=MLP(self.d_ff), experts=experts,
                    layers=tuple(Layer(moe=self.is_moe_layer(i), window=self.sliding_window)
                                 for i in range(self.n_layers)),
                    tie_embeddings=self.tie_embeddings, max_seq_len=self.max_seq_len)

    def _attention(self) -> Attention:
        if self.mla is not None:
            a = self.mla
            return Attention(self.n_heads, self.n_heads, self.head_dim + a.rope_head_dim, v_head_dim=self.head_dim,
                             q_lora_rank=a.q_lora_rank, kv_lora_rank=a.kv_lora_rank, rope_head_dim=a.rope_head_dim)
        return Attention(self.n_heads, self.n_kv_heads, self.head_dim, qkv_bias=self.qkv_bias, qk_norm=self.qk_norm)

    @property
    def num_params_embedding(self) -> int:
        return self.arch().num_params_embedding

    @property
    def num_params_non_embedding(self) -> int:
        return self.arch().num_params_non_embedding

    @property
    def num_params_total(self) -> int:
        return self.arch().num_params_total

    @property
    def num_params_active_non_embedding(self) -> int:
        return self.arch().num_params_active_non_embedding

    @property
    def num_params_active(self) -> int:
        return self.arch().num_params_active

    @property
    def flops_per_token_6n(self) -> int:
        return 6 * self.num_params_active

    def forward_flops_per_token(self, seq_len: int | None = None, causal: bool = False) -> int:
        """Matmul FLOPs of one forward pass per token at context ``seq_len`` (`Arch.forward_flops_per_token`):
        attention scores and values cost 2 * 2 * seq_len * q_dim per layer (QK^T and AV); with
        ``causal=True`` only the lower triangle is counted (about half); the default counts the full
        square as Chinchilla (Hoffmann et al. 2022, Appendix F) and Kaplan do."""
        return self.arch().forward_flops_per_token(seq_len, causal)

    def flops_per_token_exact(self, seq_len: int | None = None, causal: bool = False) -> int:
        """Training FLOPs per token: forward + backward (2x forward) = 3x forward."""
        return 3 * self.forward_flops_per_token(seq_len, causal)

    @property
    def kv_cache_elements_per_token(self) -> int:
        return self.arch().kv_cache_elements_per_token

    def kv_cache_elements(self, context: int) -> int:
        return self.arch().kv_cache_elements(context)

    # ---- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return build(cls, d, "model")

    def counts(self, seq_len: int | None = None) -> dict:
        """Every analytic count in one dictionary (what `scalelab count --json` prints)."""
        return self.arch().counts(seq_len)


@functools.lru_cache(maxsize=4096)
def _arch_of(cfg: ModelConfig) -> Arch:
    return cfg._build_arch()


def swiglu_hidden(d_model: int, multiple_of: int = 64) -> int:
    """SwiGLU width: 2/3 of 4*d_model so the three matrices cost what a 4x GELU MLP costs (Shazeer
    2020), rounded up to a multiple of ``multiple_of`` as Llama does."""
    hidden = int(8 * d_model / 3)
    return multiple_of * math.ceil(hidden / multiple_of)

