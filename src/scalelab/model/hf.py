"""Hugging Face interop, configs: read `config.json` of Llama / Mistral / Mixtral, write ours as one,
with the tokenizer files and generation config downstream tools read.

Special tokens: scalelab's tokenizers have one, ``<|endoftext|>``, which separates documents in the
training stream (data/shards.py). It is therefore the end of a text (eos: generation stops there), the
start of one (bos: what every document follows, and lm-evaluation-harness's prefix for an empty
context) and the padding, as in GPT-2's tokenizer; no token is added when encoding.

Torch-free (`scalelab count` reads HF configs without torch); the weights are in hf_weights.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from scalelab.data.tokenizer import end_of_text
from scalelab.errors import UserError
from scalelab.io import atomic_write_text, read_config_file
from scalelab.model.config import MLAConfig, ModelConfig, MoEConfig
from scalelab.model.hf_arch import arch_from_hf

SUPPORTED = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "olmoe", "deepseek_v2")
"""model types whose blocks scalelab's own family builds exactly (pre-norm RMSNorm, RoPE, SwiGLU)."""
CLASSES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "mixtral": "MixtralForCausalLM",
           "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM",
           "olmoe": "OlmoeForCausalLM", "deepseek_v2": "DeepseekV2ForCausalLM"}


def config_from_hf(hf: dict | str | Path) -> ModelConfig:
    """Translate a Hugging Face ``config.json`` (dict or path) of a `SUPPORTED` type into a `ModelConfig`
    (read through `model/hf_arch.py`, so transformers' defaults apply to absent keys)."""
    if not isinstance(hf, dict):
        path = Path(hf)
        hf = read_config_file(path / "config.json" if path.is_dir() else path)
    mtype = hf.get("model_type")
    if mtype not in SUPPORTED:
        raise UserError(f"config.json model_type={mtype!r} cannot be built by scalelab's model family; "
                        f"use one of {', '.join(SUPPORTED)} (`scalelab count` reads many more)")
    for flag in ("mlp_bias",) + (("attention_bias",) if mtype not in ("qwen2",) else ()):
        if hf.get(flag):
            raise UserError(f"config.json sets {flag}=true; scalelab models have no such biases")
    scaling = (hf.get("rope_scaling") or {}).get("rope_type", "default")
    if hf.get("hidden_act", "silu") != "silu" or scaling != "default":
        raise UserError("config.json: scalelab models use SiLU and plain RoPE (no rope_scaling)")
    a = arch_from_hf(hf)
    windows = {x.window for x in a.layers}
    if len(windows) > 1:
        raise UserError("config.json: sliding windows on some layers only; scalelab models use one window for all")
    at = a.attention
    mla, head_dim = None, at.head_dim
    if at.mla:
        if at.v_head_dim != at.head_dim - at.rope_head_dim or hf.get("topk_method", "greedy") != "greedy" \
                or hf.get("routed_scaling_factor", 1.0) != 1.0:
            raise UserError("config.json: scalelab's MLA needs qk_nope_head_dim = v_head_dim, greedy top-k routing "
                            "and routed_scaling_factor 1 (DeepSeek-V2-Lite's shape)")
        mla, head_dim = MLAConfig(at.kv_lora_rank, at.q_lora_rank, at.rope_head_dim), at.v_head_dim
    return ModelConfig(
        d_model=a.d_model, n_layers=a.n_layers, n_heads=at.n_heads, n_kv_heads=at.n_kv_heads, head_dim=head_dim,
        d_ff=a.mlp.d_ff, vocab_size=a.vocab_size, max_seq_len=a.max_seq_len, tie_embeddings=a.tie_embeddings,
        rope_theta=float(hf.get("rope_theta") or (hf.get("rope_parameters") or {}).get("rope_theta") or 10000.0),
        norm_eps=hf.get("rms_norm_eps", 1e-5), init_std=hf.get("initializer_range", 0.02),
        qkv_bias=at.qkv_bias, qk_norm=at.qk_norm, sliding_window=windows.pop(), mla=mla, moe=_moe(hf, a),
    ).validate()


def _moe(hf: dict, a) -> MoEConfig | None:
    e = a.experts
    if e is None or not any(x.moe for x in a.layers):
        return None
    if e.shared_d_ff % e.d_expert or e.shared_gate:
        raise UserError("config.json: shared experts must be whole experts without a gate (DeepSeek's, not "
                        "Qwen2-MoE's)")
    mtype = hf.get("model_type")
    renormalize = mtype == "mixtral" or (mtype != "deepseek_v2" and bool(hf.get("norm_topk_prob", False)))
    return MoEConfig(num_experts=e.num_experts, top_k=e.top_k, d_expert=e.d_expert, z_coef=0.0,
                     num_shared_experts=e.shared_d_ff // e.d_expert, lb_coef=hf.get("router_aux_loss_coef", 0.01),
                     first_dense_layers=_first_dense(a), renormalize=renormalize)


def _first_dense(a) -> int:
    flags = [x.moe for x in a.layers]
    first = flags.index(True)
    if not all(flags[first:]):
        raise UserError("config.json: MoE on some layers only after the first; scalelab models put the dense "
                        "layers first (model.moe.first_dense_layers)")
    return first


def hf_model_type(cfg: ModelConfig) -> str:
    """The transformers model type whose blocks equal ours, or a one-line error saying why none does."""
    m = cfg.moe
    if cfg.mla is not None:
        if m is not None and m.renormalize:
            raise UserError("MLA exports as DeepSeek-V2, whose router keeps the softmax weights: set "
                            "model.moe.renormalize=false")
        return "deepseek_v2"
    if m is not None and (m.num_shared_experts or m.first_dense_layers):
        raise UserError("shared experts or dense first layers cannot be exported without multi-head latent "
                        "attention (DeepSeek's transformers class has both)")
    if cfg.qkv_bias and (cfg.qk_norm or m is not None):
        raise UserError("model.qkv_bias with q/k norms or experts has no transformers class (Qwen2 is dense)")
    if cfg.qk_norm == "full" and (m is None or cfg.sliding_window):
        raise UserError("model.qk_norm='full' exports as OLMoE (MoE, no sliding window); OLMo-2, the dense one, "
                        "puts its norms after the blocks")
    if cfg.qk_norm == "full":
        return "olmoe"
    if cfg.qk_norm == "head":
        return "qwen3_moe" if m else "qwen3"
    if m is not None:
        return "mixtral"
    return "qwen2" if cfg.qkv_bias else "mistral" if cfg.sliding_window else "llama"


def config_to_hf(cfg: ModelConfig, eot_id: int | None = None) -> dict:
    """Our config as a ``config.json`` of `hf_model_type`; with ``eot_id``, its bos/eos/pad ids too."""
    if cfg.parametrization == "mup" and (cfg.width_mult != 1.0 or cfg.mup_base_head_dim != cfg.head_dim):
        raise UserError(f"model.parametrization=mup at width multiplier {cfg.width_mult:g}: its logit multiplier "
                        "and attention scale have no field in a Llama config.json; export a model trained with sp")
    mtype, m = hf_model_type(cfg), cfg.moe
    hf = {
        "architectures": [CLASSES[mtype]], "model_type": mtype, "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim, "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_embeddings, "hidden_act": "silu", "attention_bias": False,
        "mlp_bias": False, "attention_dropout": 0.0, "initializer_range": cfg.init_std, "torch_dtype": "float32",
        "use_cache": True, "sliding_window": cfg.sliding_window or None,
    }
    if cfg.sliding_window and mtype.startswith("qwen"):
        hf.update(use_sliding_window=True, max_window_layers=0, layer_types=["sliding_attention"] * cfg.n_layers)
    if eot_id is not None:
        hf.update(bos_token_id=eot_id, eos_token_id=eot_id, pad_token_id=eot_id)
    if mtype == "deepseek_v2":
        return {**hf, **_deepseek_keys(cfg)}
    if m is not None:
        hf.update(num_experts_per_tok=m.top_k, router_aux_loss_coef=m.lb_coef, output_router_logits=False,
                  norm_topk_prob=m.renormalize)
        if mtype == "mixtral":
            if not m.renormalize:
                raise UserError("model.moe.renormalize=false cannot be exported as Mixtral (it always renormalises)")
            hf.update(num_local_experts=m.num_experts, intermediate_size=m.d_expert)
        else:
            hf.update(num_experts=m.num_experts, moe_intermediate_size=m.d_expert, intermediate_size=m.d_expert,
                      decoder_sparse_step=1, mlp_only_layers=[])
    return hf


def _deepseek_keys(cfg: ModelConfig) -> dict:
    """MLA and DeepSeek-MoE keys of a DeepSeek-V2 config (greedy softmax top-k, no scaling); a dense model is
    one whose layers are all 'first dense' ones."""
    a, m = cfg.mla, cfg.moe
    hf = {"q_lora_rank": a.q_lora_rank or None, "kv_lora_rank": a.kv_lora_rank, "qk_nope_head_dim": cfg.head_dim,
          "qk_rope_head_dim": a.rope_head_dim, "v_head_dim": cfg.head_dim, "head_dim": a.rope_head_dim,
          "num_key_value_heads": cfg.n_heads, "topk_method": "greedy", "n_group": 1, "topk_group": 1,
          "routed_scaling_factor": 1.0, "norm_topk_prob": False, "moe_layer_freq": 1}
    if m is None:
        return {**hf, "first_k_dense_replace": cfg.n_layers, "n_routed_experts": 1, "num_experts_per_tok": 1,
                "n_shared_experts": 0, "moe_intermediate_size": cfg.d_ff}
    return {**hf, "first_k_dense_replace": m.first_dense_layers, "n_routed_experts": m.num_experts,
            "num_experts_per_tok": m.top_k, "n_shared_experts": m.num_shared_experts,
            "moe_intermediate_size": m.d_expert, "router_aux_loss_coef": m.lb_coef}


def eot_id(tokenizer) -> int:
    """The id of the tokenizer's end-of-text token (`data.tokenizer.end_of_text`)."""
    return end_of_text(tokenizer)[1]


def save_tokenizer_files(tokenizer, out: Path, model_max_length: int) -> list[str]:
    """``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` with bos = eos = pad =
    ``<|endoftext|>`` (module docstring), through transformers' `PreTrainedTokenizerFast.save_pretrained`
    when the ``[hf]`` extra is installed, else the same fields written directly."""
    eot = end_of_text(tokenizer)[0]
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        tokenizer.save(str(out / "tokenizer.json"))
        special = {"bos_token": eot, "eos_token": eot, "pad_token": eot}
        atomic_write_text(out / "tokenizer_config.json", json.dumps(
            {**special, "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
             "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False}, indent=2))
        atomic_write_text(out / "special_tokens_map.json", json.dumps(special, indent=2))
    else:
        fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=eot, eos_token=eot, pad_token=eot,
                                       model_max_length=model_max_length, clean_up_tokenization_spaces=False)
        fast.save_pretrained(str(out))
    return sorted(p.name for p in out.iterdir() if p.name.startswith(("tokenizer", "special_tokens")))


def save_generation_config(out: Path, eot: int) -> str:
    """``generation_config.json``: stop at eos, pad with it (transformers' `GenerationConfig` when installed).
    No max_length: callers set max_new_tokens, and the context length is in config.json."""
    fields = {"bos_token_id": eot, "eos_token_id": eot, "pad_token_id": eot}
    try:
        from transformers import GenerationConfig
    except ImportError:
        atomic_write_text(out / "generation_config.json", json.dumps(fields, indent=2))
    else:
        GenerationConfig(**fields).save_pretrained(str(out))
    return "generation_config.json"
