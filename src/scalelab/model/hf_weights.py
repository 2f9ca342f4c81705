"""Hugging Face interop, weights: export and load ``model.safetensors`` in the original checkpoint layout
of Llama, Mistral, Qwen2, Qwen3 (q/k norms), Mixtral (``block_sparse_moe.experts.{j}.w1``), Qwen3-MoE
and OLMoE (``mlp.experts.{j}.gate_proj``), which `transformers` (v4 and v5) reads (tested: logits,
tokenizer, generation). Our RoPE uses the same "rotate half" layout as HF Llama, so Q and K
need no permutation. Other readers of this layout (vLLM, llama.cpp's converter) are untested here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from scalelab.errors import UserError
from scalelab.model.hf import (
    config_from_hf,
    config_to_hf,
    eot_id,
    hf_model_type,
    save_generation_config,
    save_tokenizer_files,
)
from scalelab.model.transformer import Transformer


def to_hf_state_dict(model) -> dict:
    """Our parameters under the original HF names and row order (detached, contiguous, CPU)."""
    order = rope_row_order(model.cfg)
    out = {}
    for k, v in _param_views(model).items():
        v = v.detach().to("cpu")
        rows = _rows(order, k)
        out[k] = (v if rows is None else v[rows]).contiguous()
    return out


def save_hf(model, out_dir: str | Path, tokenizer=None) -> list[str]:
    """Write ``config.json`` + ``model.safetensors`` that `transformers` loads with from_pretrained; with
    the run's ``tokenizer``, also its files, the special tokens' ids and ``generation_config.json``
    (`model/hf.py`). Returns the file names written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eot = None if tokenizer is None else eot_id(tokenizer)
    hf_cfg = config_to_hf(model.cfg, eot)
    save_file(to_hf_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    written = ["config.json", "model.safetensors"]
    if tokenizer is not None:
        written += save_tokenizer_files(tokenizer, out, model.cfg.max_seq_len)
        written.append(save_generation_config(out, eot))
    return written


def load_hf(path: str | Path):
    """Build one of our models from an HF directory in the original Llama / Mixtral layout."""
    model = Transformer(config_from_hf(Path(path)))
    return load_hf_into(model, path)


def load_hf_into(model, path: str | Path):
    """Copy an HF directory's weights (original Llama / Mixtral layout) into ``model``, whose config must
    match the directory's; returns the model."""
    path = Path(path)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"no *.safetensors weights in {path}")
    sd = {}
    for f in files:
        sd.update(load_file(str(f)))
    targets = _param_views(model)
    missing = [k for k in targets if k not in sd]
    if missing:
        raise UserError(f"{path} lacks {len(missing)} weights, e.g. {missing[0]!r}")
    order = rope_row_order(model.cfg)
    with torch.no_grad():
        for name, t in targets.items():
            rows = _rows(order, name)
            t.copy_(sd[name] if rows is None else sd[name][rows.argsort()])
    return model


def _param_views(model) -> dict:
    """HF name -> live parameter (or expert slice) of our model, writable in place, in the original
    checkpoint layout of `hf_model_type` (per-expert tensors; transformers v5 stacks them on load)."""
    cfg = model.cfg
    mtype = hf_model_type(cfg)
    out = {"model.embed_tokens.weight": model.tok_emb.weight, "model.norm.weight": model.norm.weight}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = model.lm_head.weight
    for i, blk in enumerate(model.layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = blk.attn_norm.weight
        out[p + "post_attention_layernorm.weight"] = blk.mlp_norm.weight
        out.update(_attention_views(blk.attn, p + "self_attn.", cfg))
        out.update(_mlp_views(blk.mlp, p, mtype, cfg))
    return out


MLA_NAMES = {"wq": "q_proj", "wq_a": "q_a_proj", "q_norm": "q_a_layernorm", "wq_b": "q_b_proj",
             "wkv_a": "kv_a_proj_with_mqa", "kv_norm": "kv_a_layernorm", "wkv_b": "kv_b_proj", "wo": "o_proj"}


def _attention_views(attn, p: str, cfg) -> dict:
    if cfg.mla is not None:
        return {p + f"{theirs}.weight": getattr(attn, ours).weight for ours, theirs in MLA_NAMES.items()
                if hasattr(attn, ours)}
    out = {}
    for ours, theirs in (("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj"), ("wo", "o_proj")):
        out[p + f"{theirs}.weight"] = getattr(attn, ours).weight
        if getattr(attn, ours).bias is not None:
            out[p + f"{theirs}.bias"] = getattr(attn, ours).bias
    if cfg.qk_norm:
        out[p + "q_norm.weight"] = attn.q_norm.weight
        out[p + "k_norm.weight"] = attn.k_norm.weight
    return out


def _rows(order: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
    """The row order of weight ``name`` (`rope_row_order`), or None when its rows stay as they are."""
    return next((o for suffix, o in order.items() if name.endswith(suffix)), None)


def rope_row_order(cfg) -> dict[str, torch.Tensor]:
    """DeepSeek's transformers class rotates RoPE dimensions in interleaved pairs (2i, 2i+1), ours in halves
    (i, i + r/2): rows of the RoPE parts of q and of the shared key, HF name suffix -> our row for each of
    theirs (theirs = ours[order])."""
    if cfg.mla is None:
        return {}
    r, n, H, C = cfg.mla.rope_head_dim, cfg.head_dim, cfg.n_heads, cfg.mla.kv_lora_rank
    pair = torch.stack([torch.arange(r // 2), torch.arange(r // 2) + r // 2], dim=-1).reshape(-1)  # (r,)
    q = torch.cat([torch.cat([torch.arange(n), n + pair]) + h * (n + r) for h in range(H)])
    kv = torch.cat([torch.arange(C), C + pair])
    return {"q_proj.weight": q, "q_b_proj.weight": q, "kv_a_proj_with_mqa.weight": kv}


def _mlp_views(mlp, p: str, mtype: str, cfg) -> dict:
    names = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}
    if not hasattr(mlp, "router"):
        return {p + f"mlp.{theirs}.weight": getattr(mlp, ours).weight for ours, theirs in names.items()}
    if mtype == "mixtral":
        out = {p + "block_sparse_moe.gate.weight": mlp.router.weight}
        for e in range(cfg.moe.num_experts):
            out.update({p + f"block_sparse_moe.experts.{e}.{w}.weight": getattr(mlp, w)[e] for w in names})
        return out
    out = {p + "mlp.gate.weight": mlp.router.weight}  # Qwen3-MoE, OLMoE, DeepSeek-V2
    for e in range(cfg.moe.num_experts):
        out.update({p + f"mlp.experts.{e}.{theirs}.weight": getattr(mlp, ours)[e] for ours, theirs in names.items()})
    if mlp.shared is not None:
        out.update({p + f"mlp.shared_experts.{theirs}.weight": getattr(mlp.shared, ours).weight
                    for ours, theirs in names.items()})
    return out
