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
from scalelab.model.config import ModelConfig, MoEConfig

SUPPORTED = {"llama", "mistral", "mixtral"}


def config_from_hf(hf: dict | str | Path) -> ModelConfig:
    """Translate a Hugging Face ``config.json`` (dict or path) into a `ModelConfig`."""
    if not isinstance(hf, dict):
        path = Path(hf)
        hf = read_config_file(path / "config.json" if path.is_dir() else path)
    mtype = hf.get("model_type")
    if mtype not in SUPPORTED:
        raise UserError(f"config.json model_type={mtype!r} is not supported; use one of {sorted(SUPPORTED)}")
    for flag in ("attention_bias", "mlp_bias"):
        if hf.get(flag):
            raise UserError(f"config.json sets {flag}=true; scalelab models have no biases")
    try:
        d = hf["hidden_size"]
        n_heads = hf["num_attention_heads"]
        rope = hf.get("rope_theta") or (hf.get("rope_parameters") or {}).get("rope_theta") or 10000.0
        moe = None
        if mtype == "mixtral":
            moe = MoEConfig(num_experts=hf["num_local_experts"], top_k=hf["num_experts_per_tok"],
                            d_expert=hf["intermediate_size"], lb_coef=hf.get("router_aux_loss_coef", 0.02),
                            z_coef=0.0)
        return ModelConfig(
            d_model=d, n_layers=hf["num_hidden_layers"], n_heads=n_heads,
            n_kv_heads=hf.get("num_key_value_heads") or n_heads,
            head_dim=hf.get("head_dim") or d // n_heads, d_ff=hf["intermediate_size"],
            vocab_size=hf["vocab_size"], max_seq_len=hf.get("max_position_embeddings", 2048),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)), rope_theta=float(rope),
            norm_eps=hf.get("rms_norm_eps", 1e-5), init_std=hf.get("initializer_range", 0.02), moe=moe,
        ).validate()
    except KeyError as e:
        raise UserError(f"config.json lacks the field {e.args[0]!r} that a {mtype} config must have") from None


def config_to_hf(cfg: ModelConfig, eot_id: int | None = None) -> dict:
    """Our config as a Llama / Mixtral ``config.json``; with ``eot_id``, its bos/eos/pad ids too."""
    m = cfg.moe
    if m is not None and m.num_shared_experts:
        raise UserError("model.moe.num_shared_experts > 0 cannot be exported: Mixtral has no shared experts")
    hf = {
        "architectures": ["MixtralForCausalLM" if m else "LlamaForCausalLM"],
        "model_type": "mixtral" if m else "llama",
        "hidden_size": cfg.d_model,
        "intermediate_size": m.d_expert if m else cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": cfg.init_std,
        "torch_dtype": "float32",
        "use_cache": True,
    }
    if eot_id is not None:
        hf.update(bos_token_id=eot_id, eos_token_id=eot_id, pad_token_id=eot_id)
    if m:
        hf.update(num_local_experts=m.num_experts, num_experts_per_tok=m.top_k,
                  router_aux_loss_coef=m.lb_coef, output_router_logits=False, sliding_window=None)
    return hf


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
