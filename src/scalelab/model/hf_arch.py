"""Read a Hugging Face ``config.json`` of any common decoder into an `Arch` (model/arch.py), torch-free.

Each model_type's reader applies the defaults transformers applies when a key is absent (Gemma and
GPT-2 tie their embeddings; Qwen2 has q/k/v biases without a key; GPT-NeoX biases everything) and the
layer patterns it derives (Gemma 2's alternating and Gemma 3's 5:1 sliding windows, Llama 4's
chunked and NoPE layers and MoE interleave, DeepSeek's dense first layers, Qwen-MoE's sparse step).
An explicit ``layer_types`` list wins, as in transformers. Multimodal configs (Gemma 3, Llama 4) are
read through their ``text_config``: the counts are the language model's, and the notes say so.
Tested against the transformers modules on the meta device (tests/test_architectures.py).
"""

from __future__ import annotations

from dataclasses import replace

from scalelab.errors import UserError
from scalelab.model.arch import MLP, Arch, Attention, Experts, Layer
from scalelab.model.hf_defaults import TRANSFORMERS_DEFAULTS

DEFAULTS = TRANSFORMERS_DEFAULTS
"""transformers' defaults for keys a config.json may leave out (model/hf_defaults.py); a reader that uses
one says so in the notes."""


class _Cfg:
    """A config dict read as transformers reads it: a missing required key is a one-line error naming the
    model type; an absent key takes transformers' default (DEFAULTS, noted); a key set to null takes the
    value the reader gives for null (no window, no compression, derived head_dim)."""

    def __init__(self, hf: dict):
        self.hf, self.type = hf, hf.get("model_type")
        self.defaults_used: list[str] = []

    def __getitem__(self, key: str):
        v = self.get(key)
        if v is None:
            raise UserError(f"config.json lacks the field {key!r} that a {self.type} config must have")
        return v

    def get(self, key: str, null=None):
        if key not in self.hf and key in DEFAULTS.get(self.type, {}):
            v = DEFAULTS[self.type][key]
            self.defaults_used.append(f"{key}={v}")
        else:
            v = self.hf.get(key)
        return null if v is None else v


def text_config(hf: dict) -> tuple[dict, list[str]]:
    """The language model's config of a multimodal one (its ``text_config``), and what was left out."""
    if not isinstance(hf.get("text_config"), dict):
        return hf, []
    text = dict(hf["text_config"])
    text.setdefault("model_type", {"gemma3": "gemma3_text", "llama4": "llama4_text"}.get(hf.get("model_type")))
    if "tie_word_embeddings" in hf and "tie_word_embeddings" not in text:
        text["tie_word_embeddings"] = hf["tie_word_embeddings"]
    left = [k for k in hf if k.endswith("vision_config") or k.endswith("audio_config")]
    notes = [f"{hf.get('model_type')}: counts are the language model's ({text.get('model_type')}); "
             f"{', '.join(left) or 'other towers'} and the projector are counted apart (by transformers: recorded "
             "for a shipped config, else on the meta device)"]
    return text, notes


def _attention(c: _Cfg, **kw) -> Attention:
    h = c["num_attention_heads"]
    return Attention(n_heads=h, n_kv_heads=c.get("num_key_value_heads", h),
                     head_dim=c.get("head_dim", c["hidden_size"] // h), **kw)


def _windows(c: _Cfg, default: list[str] | None = None) -> list[Layer]:
    """Per layer: full, sliding (sliding_window) or chunked (attention_chunk_size) attention."""
    types = c.get("layer_types") or default or ["full_attention"] * c["num_hidden_layers"]
    if len(types) != c["num_hidden_layers"]:
        raise UserError(f"config.json: layer_types has {len(types)} entries for {c['num_hidden_layers']} layers")
    out = []
    for t in types:
        if t == "sliding_attention":
            out.append(Layer(window=c["sliding_window"]))
        elif t == "chunked_attention":
            out.append(Layer(chunk=c["attention_chunk_size"]))
        elif t == "full_attention":
            out.append(Layer())
        else:
            raise UserError(f"config.json: layer type {t!r} is not supported (full, sliding or chunked attention)")
    return out


def _arch(c: _Cfg, attention: Attention, layers: list[Layer], tie: bool = False, **kw) -> Arch:
    kw.setdefault("mlp", MLP(c["intermediate_size"]))
    return Arch(d_model=c["hidden_size"], vocab_size=c["vocab_size"], attention=attention, layers=tuple(layers),
                tie_embeddings=bool(c.get("tie_word_embeddings", tie)), model_type=c.type,
                max_seq_len=c.get("max_position_embeddings", 2048), **kw)


def _moe_flags(layers: list[Layer], is_moe) -> list[Layer]:
    return [Layer(moe=bool(is_moe(i)), window=x.window, chunk=x.chunk) for i, x in enumerate(layers)]


def _llama(c: _Cfg) -> Arch:
    bias = bool(c.get("attention_bias", False))
    sw = c.get("sliding_window") if c.type in ("mistral", "mixtral", "phi3") else None
    layers = _windows(c, ["sliding_attention" if sw else "full_attention"] * c["num_hidden_layers"])
    experts = None
    if c.type == "mixtral":
        experts = Experts(c["num_local_experts"], c["num_experts_per_tok"], c["intermediate_size"])
        layers = _moe_flags(layers, lambda i: True)
    return _arch(c, _attention(c, qkv_bias=bias, o_bias=bias), layers, experts=experts,
                 mlp=MLP(c["intermediate_size"], bias=bool(c.get("mlp_bias", False))))


def _qwen(c: _Cfg) -> Arch:
    """qwen2 (q/k/v biases), qwen3 (per-head q/k norms), and their MoE variants."""
    L, qwen3 = c["num_hidden_layers"], c.type.startswith("qwen3")
    sw = c.get("sliding_window") if c.get("use_sliding_window", False) else None
    if c.type == "qwen2_moe":
        default = ["sliding_attention" if (i + 1) % 2 and i < c.get("max_window_layers", 28) and sw else
                   "full_attention" for i in range(L)]
    else:
        default = ["sliding_attention" if sw and i >= c.get("max_window_layers", 28) else "full_attention"
                   for i in range(L)]
    layers = _windows(c, default)
    bias = bool(c.get("attention_bias", False))
    att = _attention(c, qkv_bias=bias, o_bias=bias, qk_norm="head") if qwen3 else _attention(c, qkv_bias=True)
    experts = None
    if c.type.endswith("_moe") and c.get("num_experts", 0) > 0:
        shared = c.get("shared_expert_intermediate_size", 0) if c.type == "qwen2_moe" else 0
        experts = Experts(c["num_experts"], c["num_experts_per_tok"], c["moe_intermediate_size"], shared, bool(shared))
        only, step = set(c.get("mlp_only_layers", [])), c.get("decoder_sparse_step", 1)
        layers = _moe_flags(layers, lambda i: i not in only and (i + 1) % step == 0)
    return _arch(c, att, layers, experts=experts)


def _gemma(c: _Cfg) -> Arch:
    """gemma2 (alternating sliding windows) and gemma3_text (5 sliding : 1 full, per-head q/k norms)."""
    L, g3 = c["num_hidden_layers"], c.type == "gemma3_text"
    every = c.get("sliding_window_pattern", 6) if g3 else 2
    layers = _windows(c, ["sliding_attention" if (i + 1) % every else "full_attention" for i in range(L)])
    bias = bool(c.get("attention_bias", False))
    att = _attention(c, qkv_bias=bias, o_bias=bias, qk_norm="head" if g3 else "")
    return _arch(c, att, layers, tie=True, norms_per_layer=4)


def _olmo(c: _Cfg) -> Arch:
    """olmo2 (post-norms, q/k norms over all heads) and olmoe (the same attention, 64 experts)."""
    bias = bool(c.get("attention_bias", False))
    att = _attention(c, qkv_bias=bias, o_bias=bias, qk_norm="full")
    layers = _windows(c)
    experts = None
    if c.type == "olmoe":
        experts = Experts(c["num_experts"], c["num_experts_per_tok"], c["intermediate_size"])
        layers = _moe_flags(layers, lambda i: True)
    return _arch(c, att, layers, experts=experts)


def _deepseek(c: _Cfg) -> Arch:
    """deepseek_v2 / deepseek_v3: multi-head latent attention; shared + fine-grained routed experts after
    ``first_k_dense_replace`` dense layers."""
    rope = c["qk_rope_head_dim"]
    h = c["num_attention_heads"]
    att = Attention(n_heads=h, n_kv_heads=h, head_dim=c["qk_nope_head_dim"] + rope, v_head_dim=c["v_head_dim"],
                    q_lora_rank=c.get("q_lora_rank", 0), kv_lora_rank=c["kv_lora_rank"], rope_head_dim=rope,
                    mla_bias=bool(c.get("attention_bias", False)))
    d_e = c["moe_intermediate_size"]
    experts = Experts(c["n_routed_experts"], c["num_experts_per_tok"], d_e, c.get("n_shared_experts", 0) * d_e)
    first = c.get("first_k_dense_replace", 0)
    layers = _moe_flags(_windows(c), lambda i: i >= first)
    notes = ()
    if c.get("num_nextn_predict_layers", 0):
        notes = (f"the {c['num_nextn_predict_layers']} multi-token-prediction module(s) in the checkpoint are not "
                 "counted (transformers does not build them; DeepSeek's 671B excludes them too)",)
    return _arch(c, att, layers, experts=experts, notes=notes)


def _llama4(c: _Cfg) -> Arch:
    """llama4_text: MoE every ``interleave_moe_layer_step`` layers (routed experts + a shared expert),
    chunked attention on the RoPE layers, full attention without RoPE on every 4th layer."""
    L = c["num_hidden_layers"]
    rope = c.get("no_rope_layers") or [int((i + 1) % 4 != 0) for i in range(L)]
    chunk = c.get("attention_chunk_size")
    layers = _windows(c, ["chunked_attention" if r and chunk else "full_attention" for r in rope])
    step = c.get("interleave_moe_layer_step", 1)
    moe = set(c.get("moe_layers") or range(step - 1, L, step))
    ff = c["intermediate_size"]
    experts = Experts(c["num_local_experts"], c["num_experts_per_tok"], ff, shared_d_ff=ff)
    bias = bool(c.get("attention_bias", False))
    att = _attention(c, qkv_bias=bias, o_bias=bias, qk_norm="l2" if c.get("use_qk_norm", True) else "")
    return _arch(c, att, _moe_flags(layers, lambda i: i in moe), experts=experts,
                 mlp=MLP(c.get("intermediate_size_mlp", ff)))


def _gpt2(c: _Cfg) -> Arch:
    d = c["n_embd"]
    h = c["n_head"]
    return Arch(d_model=d, vocab_size=c["vocab_size"], layers=(Layer(),) * c["n_layer"],
                attention=Attention(h, h, d // h, qkv_bias=True, o_bias=True),
                mlp=MLP(c.get("n_inner", 4 * d), gated=False, bias=True), norm_bias=True,
                positions=c["n_positions"], tie_embeddings=bool(c.get("tie_word_embeddings", True)),
                max_seq_len=c["n_positions"], model_type="gpt2")


def _gpt_neox(c: _Cfg) -> Arch:
    bias = bool(c.get("attention_bias", True))
    return _arch(c, _attention(c, qkv_bias=bias, o_bias=bias), _windows(c), norm_bias=True,
                 mlp=MLP(c["intermediate_size"], gated=False, bias=True))


READERS = {
    "llama": _llama, "mistral": _llama, "mixtral": _llama, "phi3": _llama,
    "qwen2": _qwen, "qwen3": _qwen, "qwen2_moe": _qwen, "qwen3_moe": _qwen,
    "gemma2": _gemma, "gemma3_text": _gemma, "olmo2": _olmo, "olmoe": _olmo,
    "deepseek_v2": _deepseek, "deepseek_v3": _deepseek, "llama4_text": _llama4,
    "gpt2": _gpt2, "gpt_neox": _gpt_neox,
}


def arch_from_hf(hf: dict) -> Arch:
    """The `Arch` of a Hugging Face config dict; an unknown model_type is a `UserError` (the CLI then
    falls back to transformers on the meta device: model/hf_meta.py)."""
    text, notes = text_config(hf)
    mtype = text.get("model_type")
    if mtype not in READERS:
        raise UserError(f"config.json model_type={mtype!r} has no analytic reader; known: {', '.join(sorted(READERS))}")
    c = _Cfg(text)
    arch = READERS[mtype](c)
    if c.defaults_used:
        used = ", ".join(dict.fromkeys(c.defaults_used))
        notes.append(f"absent from config.json, transformers' defaults used: {used}")
    return replace(arch, notes=(*notes, *arch.notes))
