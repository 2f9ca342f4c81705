"""Hugging Face interop: import `config.json` of Llama / Mistral / Mixtral, export and load weights.

Export writes ``model.safetensors`` + ``config.json`` in the original Llama / Mixtral layout
(``block_sparse_moe.experts.{j}.w1``), which `transformers` (v4 and v5), vLLM and llama.cpp read.
Our RoPE uses the same "rotate half" layout as HF Llama, so Q and K need no permutation.
"""

from __future__ import annotations

import json
from pathlib import Path

from scalelab.config import read_config_file
from scalelab.errors import UserError
from scalelab.model.config import ModelConfig, MoEConfig
from scalelab.model.transformer import Transformer

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


def config_to_hf(cfg: ModelConfig) -> dict:
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
    if m:
        hf.update(num_local_experts=m.num_experts, num_experts_per_tok=m.top_k,
                  router_aux_loss_coef=m.lb_coef, output_router_logits=False, sliding_window=None)
    return hf


def to_hf_state_dict(model) -> dict:
    """Our parameters under the original HF Llama / Mixtral names (detached, contiguous, CPU)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in _param_views(model).items()}


def save_hf(model, out_dir: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` that `transformers` loads with from_pretrained."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_cfg = config_to_hf(model.cfg)
    save_file(to_hf_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    return out


def load_hf(path: str | Path):
    """Build one of our models from an HF directory in the original Llama / Mixtral layout."""
    import torch
    from safetensors.torch import load_file


    path = Path(path)
    cfg = config_from_hf(path)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"no *.safetensors weights in {path}")
    sd = {}
    for f in files:
        sd.update(load_file(str(f)))
    model = Transformer(cfg)
    targets = _param_views(model)
    missing = [k for k in targets if k not in sd]
    if missing:
        raise UserError(f"{path} lacks {len(missing)} weights, e.g. {missing[0]!r}")
    with torch.no_grad():
        for name, t in targets.items():
            t.copy_(sd[name])
    return model


def _param_views(model) -> dict:
    """HF name -> live parameter (or expert slice) of our model, writable in place."""
    cfg = model.cfg
    out = {"model.embed_tokens.weight": model.tok_emb.weight, "model.norm.weight": model.norm.weight}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = model.lm_head.weight
    for i, blk in enumerate(model.layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = blk.attn_norm.weight
        out[p + "post_attention_layernorm.weight"] = blk.mlp_norm.weight
        for ours, theirs in (("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj"), ("wo", "o_proj")):
            out[p + f"self_attn.{theirs}.weight"] = getattr(blk.attn, ours).weight
        if cfg.moe is None:
            for ours, theirs in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")):
                out[p + f"mlp.{theirs}.weight"] = getattr(blk.mlp, ours).weight
        else:
            out[p + "block_sparse_moe.gate.weight"] = blk.mlp.router.weight
            for e in range(cfg.moe.num_experts):
                for w in ("w1", "w2", "w3"):
                    out[p + f"block_sparse_moe.experts.{e}.{w}.weight"] = getattr(blk.mlp, w)[e]
    return out
