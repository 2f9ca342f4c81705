"""`scalelab plan --mixture FIT`: the mixture a fitted mixture law says minimises a target, under token supplies.

Candidates are drawn as RegMix does (Liu et al. 2024, section 3): many random mixtures (here 20,000 from a
Dirichlet around the fitted runs' average mixture, plus the fitted runs themselves), the law forecasts each,
and the proposal is the average of the best ``top`` (averaging the top candidates damps the regression's
noise). With ``supply`` (tokens available per domain) and ``tokens`` (the run's training tokens), a domain
asked for more tokens than it has is repeated, and repetition is costed with the data-constrained law
(Muennighoff et al. 2023: D' = U + U R*_D (1 - exp(-(epochs - 1) / R*_D)), R*_D = 15.4): the law is queried
at the *effective* mixture (each domain's effective tokens, renormalised) and, when it was fitted with N and D,
at the effective total D'. The natural mixture is the supply-proportional one (or ``natural``, or the fitted
runs' average). The gain's interval is the two forecasts' target intervals combined (their errors treated as
independent: conservative when they are positively correlated).
"""

from __future__ import annotations

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.forms import MUENNIGHOFF_REPETITION
from scalelab.laws.mixture import FittedMixture
from scalelab.laws.repetition import effective_data

CANDIDATES, TOP = 20_000, 100


def _effective(W: np.ndarray, supply: np.ndarray, tokens: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(effective mixtures, effective total tokens, epochs) of mixtures ``W`` trained on ``tokens``."""
    want = W * tokens
    epochs = want / supply
    with np.errstate(invalid="ignore", divide="ignore"):  # a domain left out (0 tokens wanted) is 0 effective
        eff = np.nan_to_num(effective_data(want, np.broadcast_to(supply, want.shape),
                                           MUENNIGHOFF_REPETITION["R_D_star"]))
    total = eff.sum(1)
    return eff / total[:, None], total, epochs


def _vector(fitted: FittedMixture, d: dict[str, float] | None, what: str) -> np.ndarray | None:
    if d is None:
        return None
    names = fitted.table.weights
    if missing := [k for k in names if k not in d]:
        raise UserError(f"{what}: give every domain ({', '.join(names)}); missing {', '.join(missing)}")
    if unknown := [k for k in d if k not in names]:
        raise UserError(f"{what}: {unknown[0]!r} is not a domain of this fit ({', '.join(names)})")
    v = np.array([d[k] for k in names], float)
    if (v < 0).any() or v.sum() <= 0:
        raise UserError(f"{what}: values must be >= 0 with a positive sum")
    return v


def plan_mixture(fitted: FittedMixture, target: str | None = None, supply: dict | None = None,
                 tokens: float | None = None, natural: dict | None = None, level: float = 0.9,
                 n: float | None = None, seed: int = 0, max_epochs: float = 4.0) -> dict:
    sup = _vector(fitted, supply, "--supply")
    if sup is not None and tokens is None:
        raise UserError("--supply needs --tokens D (the run's training tokens) to know how often each domain repeats")
    if fitted.table.scale is not None and (n is None or tokens is None):
        raise UserError("this mixture law was fitted with N and D: give --params N --tokens D")
    base = fitted.table.W.mean(0)
    rng = np.random.default_rng(seed)
    W = np.vstack([rng.dirichlet(np.maximum(base * len(base), 0.05), CANDIDATES), fitted.table.W])
    nat = _vector(fitted, natural, "--natural")
    nat_is = "given (--natural)" if nat is not None else "supply-proportional" if sup is not None else \
        "the fitted runs' average"
    nat = (nat if nat is not None else sup if sup is not None else base)
    nat = nat / nat.sum()
    tw = fitted.target_weights(target)

    def target_of(M):
        if sup is None:
            scale = None if fitted.table.scale is None else np.log(np.tile([n, tokens], (len(M), 1)))
            return fitted.predict(M, scale) @ tw
        eff, total, _ = _effective(M, sup, tokens)
        scale = None if fitted.table.scale is None else np.column_stack([np.full(len(M), np.log(n)), np.log(total)])
        return fitted.predict(eff, scale) @ tw

    if sup is not None:
        W = W[_effective(W, sup, tokens)[2].max(1) <= max_epochs]
        if len(W) < TOP:
            raise UserError(f"--supply: fewer than {TOP} candidate mixtures repeat every domain at most {max_epochs:g} "
                            f"times at {tokens:.3g} tokens; raise --max-epochs or lower --tokens")
    scores = target_of(W)
    best = W[np.argsort(scores)[:TOP]].mean(0)
    _, ht = fitted.half_widths(level, tw)
    b, m = float(target_of(best[None])[0]), float(target_of(nat[None])[0])
    names = fitted.table.weights
    out = {"target": target or "mean", "candidates": len(W), "top": TOP, "max_epochs": max_epochs if sup is not None
           else None, "natural_is": nat_is, "level": level,
           "best": {"mixture": dict(zip(names, best.tolist())), "target": _interval(b, ht)},
           "natural": {"mixture": dict(zip(names, nat.tolist())), "target": _interval(m, ht)},
           "gain": {"loss": b - m, "loss_lo": b - m - float(np.hypot(b, m)) * ht,
                    "loss_hi": b - m + float(np.hypot(b, m)) * ht}, "notes": []}
    if sup is not None:
        _, total, epochs = _effective(best[None], sup, tokens)
        out["epochs"] = dict(zip(names, epochs[0].tolist()))
        out["effective_tokens"] = float(total[0])
        if fitted.table.scale is None and total[0] < 0.999 * tokens:
            out["notes"].append(f"the proposal repeats data (effective tokens {total[0]:.3g} of {tokens:.3g}); "
                                f"this law has no D, so the loss of total data is not in its forecast")
    return out


def _interval(v: float, half_log: float) -> dict:
    return {"loss": v, "loss_lo": v * float(np.exp(-half_log)), "loss_hi": v * float(np.exp(half_log))}
