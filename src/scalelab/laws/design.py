"""Ladder design: which run to train next so that the forecast at a target narrows most per FLOP.

The forecast's log-loss variance at the target x* has two parts (laws/intervals.py):

  1. parameter uncertainty, linearised (Gauss-Newton / Laplace): with J the Jacobian of the fitted
     form's log-prediction with respect to its parameters at the fitted runs and s the robust scale
     of the log residuals,
         Sigma = s^2 (J^T W J + lambda I)^-1,      var_par(x*) = g^T Sigma g,   g = d ln L(x*) / d theta;
  2. extrapolation, (sigma_dec * log10(1 + C* / C_max_fitted))^2, which shrinks only when a larger run
     moves C_max_fitted towards the target.

A candidate run x adds w j j^T to the information (w: `discrepancy_weights`, less for runs many
decades below the target, since the form's misfit grows with distance; W holds the same weights for
the fitted runs) and may raise C_max_fitted. Its value is the drop in the interval's half-width at
the target divided by its compute 6 N D; the greedy choice of k runs takes the best, adds it, and rescores the rest (the
c-optimal design of classical experiment design, Chaloner & Verdinelli 1995, with a cost).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import median_abs_deviation

from scalelab.errors import UserError
from scalelab.laws.forms import get_form
from scalelab.laws.intervals import z_of
from scalelab.laws.law import FittedLaw

RIDGE = 1e-6


@dataclass
class DesignState:
    info: np.ndarray  # (p, p) J^T W J + ridge (W: discrepancy weights)
    s2: float  # residual variance of the log loss
    c_max: float  # largest fitted compute
    sigma_dec: float  # extrapolation term per decade (0: none)


def _jac_one(form: str, params: dict, N, D) -> np.ndarray:
    f = get_form(form)
    if not f.theta_names:
        raise UserError(f"ladder design needs a fitted loss surface; the {form} fit has none")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        _, jac = f.log_predict(f.to_theta(params), f.features(np.atleast_1d(N), np.atleast_1d(D)))
    # a parameter that underflowed to 0 (ln -> -inf) carries no information: its column is 0, not NaN
    return np.nan_to_num(np.atleast_2d(jac), nan=0.0, posinf=0.0, neginf=0.0)


def _jac(law: FittedLaw, N, D) -> np.ndarray:
    """d ln L / d theta at (N, D); an ensemble's ln L is the mean of its members', so its Jacobian is
    theirs side by side, each divided by the number of members."""
    if law.form == "ensemble":
        ms = law.params["members"]
        return np.concatenate([_jac_one(m["form"], m["params"], N, D) / len(ms) for m in ms], axis=1)
    return _jac_one(law.form, law.params, N, D)


def discrepancy_weights(C, c_target: float, s2: float, sigma_dec: float) -> np.ndarray:
    """How much a run at compute C tells about the target: its log-loss noise s^2 plus the form's
    discrepancy, (sigma_dec log10(C* / C))^2, which grows with the decades between them; weight =
    s^2 / (s^2 + discrepancy^2), 1 for a run at the target (a simple model-discrepancy term in the
    spirit of Kennedy & O'Hagan 2001)."""
    gap = sigma_dec * np.log10(np.maximum(c_target / np.asarray(C, float), 1.0))
    return s2 / (s2 + gap**2)


def state(law: FittedLaw, N, D, loss, sigma_dec: float = 0.0, c_target: float | None = None) -> DesignState:
    """The information a fitted law's own runs (N, D, loss) carry about a target at compute ``c_target``."""
    J = _jac(law, N, D)
    r = np.log(np.asarray(loss, float)) - np.log(law.predict(N, D))
    s = median_abs_deviation(r, scale="normal")  # a robust scale of the log residuals
    s2 = float(max(s, 1e-4) ** 2)
    C = 6.0 * np.asarray(N, float) * np.asarray(D, float)
    w = np.ones(len(C)) if c_target is None else discrepancy_weights(C, c_target, s2, sigma_dec)
    p = J.shape[1]
    info = J.T @ (w[:, None] * J)
    return DesignState(info + RIDGE * np.trace(info) / p * np.eye(p), s2, float(C.max()), sigma_dec)


def half_width(st: DesignState, g: np.ndarray, c_target: float, level: float = 0.9) -> float:
    """The log half-width of the interval at a target with parameter gradient ``g``."""
    var_par = st.s2 * float(g @ np.linalg.solve(st.info, g))
    ext = st.sigma_dec * np.log10(1.0 + c_target / st.c_max)
    return z_of(level) * float(np.sqrt(var_par + ext**2))


def add(st: DesignState, j: np.ndarray, c: float, c_target: float) -> DesignState:
    w = float(discrepancy_weights(c, c_target, st.s2, st.sigma_dec))
    return DesignState(st.info + w * np.outer(j, j), st.s2, max(st.c_max, c), st.sigma_dec)


def suggest(law: FittedLaw, table_N, table_D, table_loss, target_N: float, target_D: float,
            cand_N, cand_D, k: int = 3, level: float = 0.9, sigma_dec: float | None = None) -> dict:
    """Greedy: the k candidates (from ``cand_N``, ``cand_D``) that most narrow the interval at the
    target per FLOP. Returns the interval before, and after each pick."""
    if sigma_dec is None:
        sigma_dec = (law.info.get("calibration") or {}).get("sigma_per_decade", 0.0)
    c_target = 6.0 * target_N * target_D
    st = state(law, table_N, table_D, table_loss, sigma_dec, c_target)
    g = _jac(law, target_N, target_D)[0]
    cand_N, cand_D = np.asarray(cand_N, float), np.asarray(cand_D, float)
    J = _jac(law, cand_N, cand_D)
    cost = 6.0 * cand_N * cand_D
    hw0 = half_width(st, g, c_target, level)
    picks, hw, left = [], hw0, np.ones(len(cand_N), bool)
    for _ in range(min(k, len(cand_N))):
        after = np.array([half_width(add(st, J[i], cost[i], c_target), g, c_target, level) if left[i] else np.inf
                          for i in range(len(cand_N))])
        gain = np.where(left, (hw - after) / cost, -np.inf)
        i = int(np.argmax(gain))
        if gain[i] <= 0:
            break
        st, hw, left[i] = add(st, J[i], cost[i], c_target), float(after[i]), False
        picks.append({"N": float(cand_N[i]), "D": float(cand_D[i]), "C": float(cost[i]), "index": i,
                      "half_width_after": hw})
    pred = float(np.atleast_1d(law.predict(target_N, target_D))[0])
    for p in picks:
        p["loss_lo_after"], p["loss_hi_after"] = pred * np.exp(-p["half_width_after"]), pred * np.exp(
            p["half_width_after"])
    return {"target": {"N": float(target_N), "D": float(target_D), "C": c_target, "loss": pred,
                       "loss_lo": pred * np.exp(-hw0), "loss_hi": pred * np.exp(hw0), "level": level},
            "suggestions": picks}


def candidate_grid(n_min: float, n_max: float, c_max: float, n_sizes: int = 12,
                   tokens_per_param=(10, 20, 40, 80, 160)) -> tuple[np.ndarray, np.ndarray]:
    """Log-spaced sizes in [n_min, n_max] times a range of tokens-per-parameter, capped at c_max FLOPs."""
    Ns = np.geomspace(n_min, n_max, n_sizes)
    N, M = np.meshgrid(Ns, np.asarray(tokens_per_param, float))
    N, D = N.ravel(), (N * M).ravel()
    keep = 6.0 * N * D <= c_max
    return N[keep], D[keep]


def bounds(N, D, target_N: float, target_D: float, max_flops: float | None = None) -> tuple[float, float]:
    """The smallest size worth suggesting (a quarter of the largest fitted one: smaller runs mostly
    re-measure what the ladder measured, and per FLOP their tiny cost would win every time) and the
    compute cap (default: 10x the largest fitted run, and half the target's)."""
    c_target, c_fit = 6.0 * target_N * target_D, float(np.max(6.0 * np.asarray(N, float) * np.asarray(D, float)))
    if c_target <= c_fit:
        raise UserError(f"the target's compute {c_target:.3g} is inside the fitted runs (up to {c_fit:.3g}); "
                        "suggest is for forecasts beyond them", arg="compute")
    cap = min(10.0 * c_fit, c_target / 2) if max_flops is None else float(max_flops)
    if cap <= 0:
        raise UserError(f"max_flops must be positive, got {max_flops}", arg="max_flops")
    return min(float(np.max(N)) / 4, target_N), cap


def suggest_for_target(law: FittedLaw, target: dict, k: int = 3, max_flops: float | None = None,
                       level: float = 0.9) -> dict:
    """`scalelab ladder suggest`: the law's own fitted runs (``info["fitted_points"]``), a target given
    as {"N", "D"} or {"C"} (then the law's compute-optimal N*, D*), candidates from `candidate_grid`
    within `bounds`."""
    pts = law.info.get("fitted_points")
    if not pts:
        raise UserError("this fit file has no fitted runs; refit it with `scalelab fit TABLE --out FIT` "
                        "or pass the TABLE itself")
    N, D, L = (np.asarray(pts[k_], float) for k_ in ("N", "D", "loss"))
    if "C" in target:
        a = law.allocate(target["C"])
        tN, tD = float(a["N_opt"][0]), float(a["D_opt"][0])
    else:
        tN, tD = float(target["N"]), float(target["D"])
    n_min, cap = bounds(N, D, tN, tD, max_flops)
    cN, cD = candidate_grid(n_min, tN, cap)
    if not len(cN):
        raise UserError(f"no candidate run fits under {cap:.3g} FLOPs; raise it", arg="max_flops")
    res = anchor(law, suggest(law, N, D, L, tN, tD, cN, cD, k=k, level=level))
    res["max_flops"] = cap
    return res


def anchor(law: FittedLaw, res: dict) -> dict:
    """State the intervals on the law's own scale: "now" is what `scalelab predict` says at the target
    (bootstrap, calibrated), and each "after" shrinks it by the linearised ratio of half-widths."""
    t = res["target"]
    loss, lo, hi = law.predict_interval(t["N"], t["D"], t["level"])
    if lo is None:
        return res
    b_lo, b_hi = float(np.log(t["loss"] / lo[0])), float(np.log(hi[0] / t["loss"]))
    lin0 = float(np.log(t["loss_hi"] / t["loss"]))
    t.update(loss_lo=float(lo[0]), loss_hi=float(hi[0]))
    for p in res["suggestions"]:
        scale = p["half_width_after"] / lin0
        p["loss_lo_after"], p["loss_hi_after"] = t["loss"] * np.exp(-b_lo * scale), t["loss"] * np.exp(b_hi * scale)
    return res
