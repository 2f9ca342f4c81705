"""How a compute law moves between two sets of runs (e.g. filtered vs unfiltered data).

Both sets follow L(C) = E + A C^-alpha. Three nested hypotheses for what set b changes, fitted
jointly in log-loss space (as Hoffmann et al. fit their laws):

    multiplier:  L_b(C) = L_a(m C)               one extra parameter: b is worth m times the compute
    offset:      L_b(C) = L_a(C) + delta         one extra parameter: only the irreducible loss moves
    separate:    E, A, alpha all free per set    three extra parameters

Each is scored by its residual sum of squares and AICc (Akaike's criterion corrected for small
samples: n ln(SSE/n) + 2k + 2k(k+1)/(n-k-1)); the multiplier gets a residual-bootstrap interval.
The model-free multiplier of each run of b, the compute set a's runs need to reach its loss
(interpolated in log C along a's runs, never extrapolated), is reported beside it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import least_squares

HYPOTHESES = ("multiplier", "offset", "separate")


def _predict(kind: str, p: np.ndarray, lnC: np.ndarray, is_b: np.ndarray) -> np.ndarray:
    """log L for the parameters ``p`` of hypothesis ``kind`` (E and A as logs, alpha > 0)."""
    if kind == "separate":
        lnE, lnA, alpha = np.where(is_b, p[3], p[0]), np.where(is_b, p[4], p[1]), np.where(is_b, p[5], p[2])
        return np.logaddexp(lnE, lnA - alpha * lnC)
    lnE, lnA, alpha, extra = p
    if kind == "multiplier":
        return np.logaddexp(lnE, lnA - alpha * (lnC + is_b * extra))  # extra = ln m
    return np.log(np.exp(np.logaddexp(lnE, lnA - alpha * lnC)) + is_b * extra)  # extra = delta (nats)


_BOUNDS = {"multiplier": ([-10, -50, 1e-3, -20], [5, 80, 3, 20]), "offset": ([-10, -50, 1e-3, -5], [5, 80, 3, 5]),
           "separate": ([-10, -50, 1e-3, -10, -50, 1e-3], [5, 80, 3, 5, 80, 3])}


def _starts(kind: str, lnC: np.ndarray, y: np.ndarray) -> list[list[float]]:
    """A small grid of starting points: exponents 0.05-0.6, E at 30% or 70% of the lowest loss."""
    base, top = float(np.exp(y).min()), float(np.exp(y).max())
    out = []
    for alpha in (0.05, 0.15, 0.3, 0.6):
        for e_frac in (0.3, 0.7):
            lnE = math.log(e_frac * base)
            lnA = math.log(max(top - e_frac * base, 1e-3)) + alpha * float(lnC.min())
            out.append([lnE, lnA, alpha, lnE, lnA, alpha] if kind == "separate" else [lnE, lnA, alpha, 0.0])
    return out


def _fit_one(kind: str, lnC: np.ndarray, y: np.ndarray, is_b: np.ndarray,
             start: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Least squares from the grid of starts (or from ``start`` alone) -> (parameters, SSE)."""
    lo, hi = _BOUNDS[kind]

    def resid(p):
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(_predict(kind, p, lnC, is_b) - y, nan=10.0)

    best = None
    for p0 in ([start] if start is not None else _starts(kind, lnC, y)):
        r = least_squares(resid, np.clip(p0, lo, hi), bounds=(lo, hi))
        if best is None or r.cost < best.cost:
            best = r
    return best.x, float(2 * best.cost)


def _aicc(sse: float, n: int, k: int) -> float:
    sse = max(sse, 1e-300)
    return n * math.log(sse / n) + 2 * k + (2 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else math.inf)


def runs_multiplier(C_a, L_a, C_b, L_b) -> list[float]:
    """For each run of b: (compute set a needs for b's loss) / (b's compute), interpolated along a's
    runs sorted by compute, log loss linear in log compute between two runs (NaN outside a's range of
    losses). Noisy where a's neighbouring runs differ by little more than the seed scatter."""
    order = np.argsort(C_a)
    lnC, L = np.log(np.asarray(C_a, float)[order]), np.log(np.asarray(L_a, float)[order])
    out = []
    for c, loss in zip(C_b, np.log(np.asarray(L_b, float))):
        lnc_a = math.nan
        for i in range(len(L) - 1):
            if min(L[i], L[i + 1]) <= loss <= max(L[i], L[i + 1]) and L[i] != L[i + 1]:
                lnc_a = lnC[i] + (loss - L[i]) / (L[i + 1] - L[i]) * (lnC[i + 1] - lnC[i])
                break
        out.append(math.exp(lnc_a) / c if math.isfinite(lnc_a) else math.nan)
    return out


def fit_shift(C_a, L_a, C_b, L_b, bootstrap: int = 200, level: float = 0.9, seed: int = 0) -> dict:
    """Fit the three hypotheses to sets a and b; the multiplier with a residual-bootstrap interval."""
    lnC = np.log(np.concatenate([C_a, C_b]).astype(float))
    y = np.log(np.concatenate([L_a, L_b]).astype(float))
    is_b = np.r_[np.zeros(len(C_a)), np.ones(len(C_b))]
    n, out, raw = len(y), {}, {}
    for kind in HYPOTHESES:
        raw[kind], sse = _fit_one(kind, lnC, y, is_b)
        out[kind] = {"params": _named(kind, raw[kind]), "sse": sse, "aicc": _aicc(sse, n, len(raw[kind]))}
    fitted = _predict("multiplier", raw["multiplier"], lnC, is_b)
    rng, draws = np.random.default_rng(seed), []
    for _ in range(bootstrap):
        y_star = fitted + rng.choice(y - fitted, n, replace=True)
        draws.append(math.exp(_fit_one("multiplier", lnC, y_star, is_b, start=raw["multiplier"])[0][3]))
    q = (1 - level) / 2
    m = out["multiplier"]["params"]["m"]
    out["multiplier"]["interval"] = [float(np.quantile(draws, q)), float(np.quantile(draws, 1 - q))] if draws else None
    out["best"] = min(HYPOTHESES, key=lambda k: out[k]["aicc"])
    out["m"], out["level"], out["n_points"] = m, level, n
    out["runs_multiplier"] = runs_multiplier(C_a, L_a, C_b, L_b)
    return out


def _named(kind: str, p: np.ndarray) -> dict:
    if kind == "separate":
        return {"E_a": math.exp(p[0]), "A_a": math.exp(p[1]), "alpha_a": p[2],
                "E_b": math.exp(p[3]), "A_b": math.exp(p[4]), "alpha_b": p[5]}
    named = {"E": math.exp(p[0]), "A": math.exp(p[1]), "alpha": float(p[2])}
    return {**named, "m": math.exp(p[3])} if kind == "multiplier" else {**named, "delta": float(p[3])}
