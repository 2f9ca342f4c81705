"""Sizing and costing one training run from a scaling law: what `scalelab plan` prints."""

from __future__ import annotations

import numpy as np

from scalelab.economics.cost import training_cost
from scalelab.economics.hardware import get_hardware
from scalelab.errors import UserError
from scalelab.laws.alloc_methods import allocation_forecast
from scalelab.laws.allocation import allocate_unique, inference_aware
from scalelab.laws.published import get_law
from scalelab.laws.ranges import compute_warning, unique_tokens_warning


def _one(x):
    return None if x is None else float(np.atleast_1d(x)[0])


def plan_run(C: float, law_name: str = "besiroglu2024", gpu: str = "h100-sxm", gpus: int = 1, mfu: float = 0.4,
             price: float | None = None, inference_tokens: float | None = None,
             unique_tokens: float | None = None) -> dict:
    """N*, D*, predicted loss and the cost of training them under law ``law_name``; with
    ``inference_tokens``, the smaller, longer-trained model that minimises training + inference
    FLOPs at the same loss (Sardana & Frankle 2023); with ``unique_tokens``, the allocation when the
    data is capped (Muennighoff et al. 2023), beside the unconstrained one."""
    if not C > 0:
        raise UserError(f"compute must be a positive number of FLOPs, got {C}", arg="compute")
    law = get_law(law_name)
    hw = get_hardware(gpu)
    warnings = [w for w in (compute_warning(law, C), unique_tokens and unique_tokens_warning(unique_tokens)) if w]
    if unique_tokens is not None:
        if inference_tokens:
            raise UserError("--unique-tokens and --inference-tokens answer different questions; give one")
        out = {"law": law_name, **allocate_unique(law, C, unique_tokens)}
        out["predicted_loss"] = out.pop("loss")
        out.update(training_cost(C, hw, gpus, mfu, price), warnings=warnings)
        return out
    a = allocation_forecast(law, C)  # N*, D* from the allocation method a fit file keeps, if any
    out = {"C": C, "law": law_name, "N_opt": _one(a["N_opt"]), "D_opt": _one(a["D_opt"]),
           "tokens_per_param": _one(a["tokens_per_param"]), "predicted_loss": _one(a.get("loss"))}
    for k in ("N_opt", "D_opt", "loss"):
        if k + "_lo" in a:
            out[k + "_interval"] = [_one(a[k + "_lo"]), _one(a[k + "_hi"])]
    out.update(training_cost(C, hw, gpus, mfu, price), warnings=warnings)
    if inference_tokens:
        if out["predicted_loss"] is None:
            raise UserError("inference_tokens needs a law with a loss surface (not an approach-2 fit)",
                            arg="inference_tokens")
        ia = inference_aware(law, out["predicted_loss"], inference_tokens)
        opt, chin = ia["optimal"], ia["chinchilla_optimal"]
        cost_opt = training_cost(opt["total_flops"], hw, gpus, mfu, price)["cost_usd"]
        cost_chin = training_cost(chin["total_flops"], hw, gpus, mfu, price)["cost_usd"]
        out["inference_aware"] = {"inference_tokens": inference_tokens, "target_loss": out["predicted_loss"],
                                  "N": opt["N"], "D_train": opt["D_train"], "tokens_per_param": opt["tokens_per_param"],
                                  "total_flops": opt["total_flops"], "total_cost_usd": cost_opt,
                                  "chinchilla_total_flops": chin["total_flops"], "chinchilla_total_cost_usd": cost_chin,
                                  "saving": ia["flops_saving"]}
    return out
