"""Compute-optimal allocation and inference-aware sizing.

Closed form for the Chinchilla law with C = 6ND (Hoffmann et al. 2022, eq. 4):
    N_opt(C) = G (C/6)^a,  D_opt(C) = G^-1 (C/6)^b,  G = (alpha A / (beta B))^(1/(alpha+beta)),
    a = beta / (alpha + beta),  b = alpha / (alpha + beta).
Any other law or FLOPs convention: minimise L(N, D(N)) over log N numerically, with D(N) the tokens
that budget C buys at flops_per_token(N).

Inference-aware sizing (Sardana & Frankle 2023): for a target loss, minimise total FLOPs
    6 N D_train + 2 N D_inference   subject to  L(N, D_train) = target.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from scalelab.errors import UserError
from scalelab.laws.forms import MUENNIGHOFF_REPETITION, get_form, half_value_epochs


def _chinchilla_closed(p: dict, C: np.ndarray):
    al, be, A, B = p["alpha"], p["beta"], p["A"], p["B"]
    G = (al * A / (be * B)) ** (1.0 / (al + be))
    a, b = be / (al + be), al / (al + be)
    N = G * (C / 6.0) ** a
    D = (C / 6.0) ** b / G
    return N, D


def allocate(law, C: np.ndarray, flops_per_token=None, params: dict | None = None) -> dict:
    p = law.params if params is None else params
    C = np.atleast_1d(np.asarray(C, float))
    if law.form == "allocation":
        N = p["k"] * C ** p["a"]
        fpt = flops_per_token(N) if flops_per_token else 6.0 * N
        D = C / fpt
        loss = None
    elif law.form == "chinchilla" and flops_per_token is None:
        N, D = _chinchilla_closed(p, C)
        loss = law.predict(N, D) if params is None else _predict(law, p, N, D)
    else:
        N, D = np.empty_like(C), np.empty_like(C)
        for i, c in enumerate(C):
            def obj(lnN, c=c):
                n = np.exp(lnN)
                d = c / (flops_per_token(n) if flops_per_token else 6.0 * n)
                return float(_predict(law, p, n, d))
            res = minimize_scalar(obj, bounds=(np.log(1e2), np.log(max(1e3, c / 6.0))), method="bounded",
                                  options={"xatol": 1e-6})
            N[i] = np.exp(res.x)
            D[i] = c / (flops_per_token(N[i]) if flops_per_token else 6.0 * N[i])
        loss = _predict(law, p, N, D)
    return {"C": C, "N_opt": N, "D_opt": D, "tokens_per_param": D / N, "loss": loss}


def _predict(law, p, N, D):
    return get_form(law.form).predict(p, N, D)


def tokens_for_loss(p: dict, N, target: float):
    """Chinchilla form: training tokens that reach ``target`` loss at size N (inf if unreachable)."""
    gap = target - p["E"] - p["A"] / np.asarray(N, float) ** p["alpha"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap > 0, (p["B"] / gap) ** (1.0 / p["beta"]), np.inf)


def inference_aware(law, target_loss: float, inference_tokens: float) -> dict:
    """Smallest total-FLOPs model reaching ``target_loss`` when it will also serve
    ``inference_tokens`` (2N FLOPs per token), versus the training-compute-optimal model."""
    if law.form != "chinchilla":
        raise UserError("inference-aware sizing needs a Chinchilla-form law (E, A, B, alpha, beta)")
    p = law.params
    if target_loss <= p["E"]:
        raise UserError(f"target loss {target_loss} is at or below the irreducible loss E={p['E']:.4g}")
    n_min = (p["A"] / (target_loss - p["E"])) ** (1.0 / p["alpha"])  # infinite-data limit

    def total(lnN, d_inf):
        n = np.exp(lnN)
        d = tokens_for_loss(p, n, target_loss)
        return float(6.0 * n * d + 2.0 * n * d_inf)

    def solve(d_inf):
        lo, hi = np.log(n_min * (1 + 1e-9)), np.log(n_min * 1e4)
        res = minimize_scalar(lambda x: total(x, d_inf), bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-9})
        n = float(np.exp(res.x))
        d = float(tokens_for_loss(p, n, target_loss))
        return {"N": n, "D_train": d, "tokens_per_param": d / n, "train_flops": 6 * n * d,
                "inference_flops": 2 * n * d_inf, "total_flops": 6 * n * d + 2 * n * d_inf}

    opt, chin = solve(inference_tokens), solve(0.0)
    chin_total = chin["train_flops"] + 2 * chin["N"] * inference_tokens
    return {"target_loss": target_loss, "inference_tokens": inference_tokens, "optimal": opt,
            "chinchilla_optimal": {**chin, "inference_flops": 2 * chin["N"] * inference_tokens,
                                   "total_flops": chin_total},
            "flops_saving": 1.0 - opt["total_flops"] / chin_total}




def data_constrained_params(law) -> tuple[dict, str]:
    """The parameters of ``law`` as a data-constrained law: its own if it is one, else its Chinchilla-form
    parameters with Muennighoff et al.'s repetition constants (and a line saying so)."""
    if law.form == "data_constrained":
        return dict(law.params), "the law's own R_D*, R_N*"
    if law.form != "chinchilla":
        raise UserError(f"unique tokens need a Chinchilla-form or data-constrained law, not {law.form!r}")
    return {**law.params, **MUENNIGHOFF_REPETITION}, ("R_D* = 15.4, R_N* = 5.3 from Muennighoff et al. 2023 "
                                                     "(eq. 5) on the law's Chinchilla terms")


def allocate_unique(law, C: float, unique_tokens: float) -> dict:
    """The compute-optimal N and D = C / 6N when only ``unique_tokens`` distinct tokens exist (each token
    past them is a repeat): minimise the data-constrained loss over log N. Also: the unconstrained answer,
    the loss that answer reaches on the capped data, and the epoch past which one more repeated token
    is worth less than half a fresh one (`half_value_epochs`)."""
    if not unique_tokens > 0:
        raise UserError(f"unique tokens must be > 0, got {unique_tokens}", arg="unique_tokens")
    p, constants = data_constrained_params(law)
    form = get_form("data_constrained")

    def loss(n, u=unique_tokens):
        return float(form.predict(p, n, C / (6.0 * n), unique_tokens=u))

    res = minimize_scalar(lambda ln: loss(np.exp(ln)), bounds=(np.log(1e3), np.log(max(1e4, C / 6.0))),
                          method="bounded", options={"xatol": 1e-7})
    N = float(np.exp(res.x))
    D = C / (6.0 * N)
    N_free, D_free = (float(x[0]) for x in _chinchilla_closed(p, np.array([C])))
    return {"C": C, "unique_tokens": float(unique_tokens), "N_opt": N, "D_opt": D, "epochs": D / unique_tokens,
            "tokens_per_param": D / N, "loss": loss(N), "constants": constants,
            "unconstrained": {"N_opt": N_free, "D_opt": D_free, "epochs": D_free / unique_tokens,
                              "loss_with_unique_data": loss(N_free, u=np.inf), "loss_on_capped_data": loss(N_free)},
            "half_value_epochs": half_value_epochs(p["R_D_star"])}
