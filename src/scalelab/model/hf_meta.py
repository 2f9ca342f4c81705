"""What transformers itself says about a config: the model built on the meta device (no memory, no
weights), its parameters counted. `scalelab count` uses it for a model_type without an analytic reader
(it then gives totals only, and says which figures it could not derive) and for the towers of
multimodal models (vision encoders, projectors) that the analytic reader leaves out. Needs the [hf] extra.
"""

from __future__ import annotations

import logging
import warnings

from scalelab.errors import UserError

# loggers that speak while transformers imports: torchao's optional kernels, torch's pytree deprecations
QUIET = ("torchao", "torch.utils._pytree")
NOT_DERIVED = ("num_params_active", "flops_per_token_exact", "kv_cache_bytes_per_token", "memory")


def build_on_meta(hf: dict):
    """The transformers model of a config dict, on the meta device (the class its ``architectures`` names,
    else AutoModelForCausalLM)."""
    for name in QUIET:  # their import-time warnings are not the user's business
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import torch
        import transformers
    except ImportError:
        raise UserError("this config needs transformers to be counted: pip install 'scalelab[hf]'") from None
    transformers.logging.set_verbosity_error()
    mtype = hf.get("model_type")
    if mtype not in transformers.CONFIG_MAPPING:
        raise UserError(f"model_type={mtype!r} is known neither to scalelab's readers nor to transformers "
                        f"{transformers.__version__}; check the config's model_type")
    try:
        cfg = transformers.AutoConfig.for_model(**hf)
        names = [a for a in hf.get("architectures") or [] if hasattr(transformers, a)]
        cls = getattr(transformers, names[0]) if names else transformers.AutoModelForCausalLM
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls.from_config(cfg) if cls is transformers.AutoModelForCausalLM else cls(cfg)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"transformers cannot build model_type={mtype!r}: {str(e).splitlines()[0][:200]}") from None


def meta_counts(hf: dict) -> dict:
    """Total and embedding parameters of the transformers model (tied weights counted once)."""
    model = build_on_meta(hf)
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
    emb_in = model.get_input_embeddings()
    emb_out = model.get_output_embeddings()
    emb = emb_in.weight.numel() if emb_in is not None else 0
    if emb_out is not None and emb_in is not None and emb_out.weight is not emb_in.weight:
        emb += emb_out.weight.numel()
    return {"num_params_total": int(total), "num_params_embedding": int(emb),
            "num_params_non_embedding": int(total - emb), "source": f"transformers {model.__class__.__name__} "
            "on the meta device", "not_derived": list(NOT_DERIVED)}
