"""Data-mixture laws: each validation domain's loss as a function of the training mixture.

A mixture table has one row per run: proportion columns ``w_<domain>`` (summing to 1), loss columns
``loss_<domain>`` and optionally ``N`` and ``D`` (RegMix's convention). Four estimators, one contract
(``MixtureMethod(name).fit(table) -> FittedMixture``; ``FittedMixture.predict(w, ...)``):

1. ``linear``: each domain's loss linear in the proportions (RegMix's linear baseline; plus log N, log D when
   the table has them), least squares.
2. ``dml``: Data Mixing Laws (Ye et al. 2024, eq. 1): L_i(r) = c_i + k_i exp(sum_j t_ij r_j), least squares.
3. ``bimix``: BiMix (Ge et al. 2024) at a fixed step: L_i = B_i r_i^(-beta_i), a domain's loss set by its own
   proportion (r clipped at 1e-4: RegMix's mixtures leave domains out).
4. ``regmix``: RegMix (Liu et al. 2024) regresses with LightGBM; here scikit-learn's
   HistGradientBoostingRegressor, the same histogram gradient boosting in a library scalelab already
   installs with the others it uses (no compiled LightGBM wheel to pin).

Intervals are split-conformal (Vovk et al. 2005; Lei et al. 2018): 5-fold out-of-fold log residuals give the
half-width at the requested level, per domain and for any weighted target (computed at predict time from the
stored out-of-fold predictions, so ``--target`` can change without refitting).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from scalelab.errors import UserError
from scalelab.io import atomic_write_json, read_json
from scalelab.laws.table import read_frame

METHODS = ("linear", "dml", "bimix", "regmix")
DEFAULT_MIXTURE_METHOD = "regmix"  # the winner of `scalelab backtest --mixtures` on RegMix's 60M runs (LOG)
FOLDS = 5
KIND = "mixture"  # what a mixture fit file declares (`io.json_kind`)


@dataclass
class MixtureTable:
    weights: list[str]
    """domain names of the proportion columns (w_<name>)."""
    domains: list[str]
    """domain names of the loss columns (loss_<name>)."""
    W: np.ndarray  # (runs, weights)
    Y: np.ndarray  # (runs, domains)
    scale: np.ndarray | None = None  # (runs, 2): log N, log D when the table has them
    notes: list[str] = field(default_factory=list)


def read_mixtures(src) -> MixtureTable:
    df = src.copy() if isinstance(src, pd.DataFrame) else read_frame(src)
    wcols = [c for c in df.columns if str(c).startswith("w_")]
    lcols = [c for c in df.columns if str(c).startswith("loss_")]
    if len(wcols) < 2 or not lcols:
        raise UserError(f"a mixture table needs proportion columns w_<domain> (two or more) and loss columns "
                        f"loss_<domain>; found {len(wcols)} w_ and {len(lcols)} loss_ columns")
    for c in wcols + lcols + [c for c in ("N", "D") if c in df.columns]:
        v = pd.to_numeric(df[c], errors="coerce")
        if v.isna().any():
            raise UserError(f"mixture table: column {c!r} has a missing or non-numeric value on row "
                            f"{int(np.flatnonzero(v.isna().to_numpy())[0]) + 2}")
        df[c] = v
    W = df[wcols].to_numpy(float)
    if (W < 0).any():
        raise UserError("mixture table: proportions (w_ columns) must be >= 0")
    sums = W.sum(1)
    if np.any(np.abs(sums - 1) > 0.01):
        row = int(np.argmax(np.abs(sums - 1)))
        raise UserError(f"mixture table: the w_ columns of row {row + 2} sum to {sums[row]:.4g}, not 1")
    Y = df[lcols].to_numpy(float)
    if (Y <= 0).any():
        raise UserError("mixture table: losses (loss_ columns) must be positive")
    scale = None
    if "N" in df.columns and "D" in df.columns:
        if (df["N"] <= 0).any() or (df["D"] <= 0).any():
            raise UserError("mixture table: N and D must be positive")
        scale = np.log(df[["N", "D"]].to_numpy(float))
        if np.ptp(scale, axis=0).max() == 0:
            scale = None  # one size and one budget: nothing to learn from them
    return MixtureTable([c[2:] for c in wcols], [c[5:] for c in lcols], W / sums[:, None], Y, scale)


# ---- the four regressions: fit(X, y) -> state, predict(state, X) -> y ---------------------------------------

def _features(W: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    return W if scale is None else np.hstack([W, scale])


def _fit_linear(W, scale, y, _i):
    X = np.hstack([np.ones((len(W), 1)), _features(W, scale)])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return {"coef": coef.tolist()}


def _pred_linear(s, W, scale, _i):
    return np.hstack([np.ones((len(W), 1)), _features(W, scale)]) @ np.array(s["coef"])


def _fit_dml(W, _scale, y, _i):
    """c + k exp(t . r): log(y - c) is linear in r for a fixed c; the best c on a grid starts the full fit."""
    best = None
    for frac in (0.0, 0.5, 0.8, 0.9, 0.95):
        c = frac * y.min()
        X = np.hstack([np.ones((len(W), 1)), W])
        coef, *_ = np.linalg.lstsq(X, np.log(y - c), rcond=None)
        x0 = np.r_[c, coef[0], coef[1:]]
        r = least_squares(lambda p: (p[0] + np.exp(p[1] + W @ p[2:])) / y - 1, x0, x_scale="jac", max_nfev=2000)
        if best is None or r.cost < best.cost:
            best = r
    return {"c": float(best.x[0]), "log_k": float(best.x[1]), "t": best.x[2:].tolist()}


def _pred_dml(s, W, _scale, _i):
    return s["c"] + np.exp(s["log_k"] + W @ np.array(s["t"]))


def _fit_bimix(W, _scale, y, i):
    r = np.log(np.maximum(W[:, i], 1e-4))
    coef = np.polyfit(r, np.log(y), 1)  # log L = log B - beta log r
    return {"log_B": float(coef[1]), "beta": float(-coef[0])}


def _pred_bimix(s, W, _scale, i):
    return np.exp(s["log_B"] - s["beta"] * np.log(np.maximum(W[:, i], 1e-4)))


def _fit_regmix(W, scale, y, _i):
    from sklearn.ensemble import HistGradientBoostingRegressor

    m = HistGradientBoostingRegressor(max_iter=150, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=10,
                                      l2_regularization=1.0, early_stopping=False, random_state=0)
    return {"model": m.fit(_features(W, scale), y)}


def _pred_regmix(s, W, scale, _i):
    return s["model"].predict(_features(W, scale))


REGRESSIONS = {"linear": (_fit_linear, _pred_linear), "dml": (_fit_dml, _pred_dml),
               "bimix": (_fit_bimix, _pred_bimix), "regmix": (_fit_regmix, _pred_regmix)}


def conformal_half_width(residuals: np.ndarray, level: float) -> float:
    """Split-conformal half-width: the ceil((n + 1) level)-th smallest |residual| of n (Lei et al. 2018); with
    too few residuals for the level, the largest."""
    n = len(residuals)
    return float(np.quantile(np.abs(residuals), min(1.0, np.ceil((n + 1) * level) / n), method="higher"))


# ---- the estimator --------------------------------------------------------------------------------------------

def _weight_index(t: MixtureTable, method: str) -> list[int | None]:
    idx = [t.weights.index(d) if d in t.weights else None for d in t.domains]
    if method == "bimix" and None in idx:
        missing = t.domains[idx.index(None)]
        raise UserError(f"the bimix law reads each domain's own proportion: loss_{missing} has no w_{missing}")
    return idx


def _fit_all(method: str, t: MixtureTable, rows: np.ndarray) -> list[dict]:
    fit, _ = REGRESSIONS[method]
    idx = _weight_index(t, method)
    sc = t.scale[rows] if t.scale is not None else None
    return [fit(t.W[rows], sc, t.Y[rows, j], idx[j]) for j in range(len(t.domains))]


def _predict_all(method: str, states: list[dict], t: MixtureTable, W: np.ndarray, scale) -> np.ndarray:
    _, pred = REGRESSIONS[method]
    idx = _weight_index(t, method)
    return np.column_stack([pred(s, W, scale, idx[j]) for j, s in enumerate(states)])


@dataclass(frozen=True)
class MixtureMethod:
    name: str = DEFAULT_MIXTURE_METHOD

    def __post_init__(self):
        if self.name not in METHODS:
            raise UserError(f"mixture method must be one of {', '.join(METHODS)}, got {self.name!r}")

    def fit(self, t: MixtureTable) -> FittedMixture:
        n = len(t.W)
        if n < 2 * FOLDS:
            raise UserError(f"a mixture fit needs {2 * FOLDS} runs or more (its intervals come from {FOLDS}-fold "
                            f"cross-validation); the table has {n}")
        if self.name == "dml" and n <= len(t.weights) + 2:
            raise UserError(f"the dml law has {len(t.weights) + 2} parameters per domain; the table has {n} runs")
        oof = np.empty_like(t.Y)
        for test in np.array_split(np.random.default_rng(0).permutation(n), FOLDS):
            train = np.setdiff1d(np.arange(n), test)
            sc = t.scale[test] if t.scale is not None else None
            oof[test] = _predict_all(self.name, _fit_all(self.name, t, train), t, t.W[test], sc)
        return FittedMixture(self.name, t, _fit_all(self.name, t, np.arange(n)), oof)


@dataclass
class FittedMixture:
    method: str
    table: MixtureTable
    states: list[dict]
    oof: np.ndarray
    """out-of-fold predictions of every run's domain losses (the conformal intervals' residuals)."""

    def target_weights(self, target: str | None) -> np.ndarray:
        """'mean' (default), a domain name, or NAME=WEIGHT pairs -> weights over the loss domains (sum 1)."""
        d = self.table.domains
        if target in (None, "", "mean"):
            return np.full(len(d), 1 / len(d))
        w = np.zeros(len(d))
        for item in target.split(","):
            name, eq, v = item.partition("=")
            if name not in d:
                raise UserError(f"--target: {name!r} is not a loss domain; the domains are {', '.join(d)}")
            try:
                w[d.index(name)] = float(v) if eq else 1.0
            except ValueError:
                raise UserError(f"--target: weight of {name} must be a number, got {v!r}") from None
        if w.sum() <= 0 or (w < 0).any():
            raise UserError("--target: weights must be >= 0 with a positive sum")
        return w / w.sum()

    def predict(self, W: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
        """(mixtures, weights) -> (mixtures, domains) losses."""
        if self.table.scale is not None and scale is None:
            raise UserError("this mixture law was fitted with N and D: give --params N --tokens D")
        return _predict_all(self.method, self.states, self.table, np.asarray(W, float),
                            None if self.table.scale is None else scale)

    def half_widths(self, level: float, tw: np.ndarray) -> tuple[np.ndarray, float]:
        """Conformal half-widths in log loss: per domain, and for the target weighting ``tw``."""
        def q(res):
            return conformal_half_width(res, level)
        logres = np.log(self.oof / self.table.Y)
        target_res = np.log((self.oof @ tw) / (self.table.Y @ tw))
        return np.array([q(logres[:, j]) for j in range(logres.shape[1])]), q(target_res)

    def forecast(self, w: dict[str, float], level: float = 0.9, target: str | None = None,
                 n: float | None = None, d: float | None = None) -> dict:
        W = self.mixture_vector(w)
        scale = np.log([[n, d]]) if n is not None and d is not None else None
        y = self.predict(W, scale)[0]
        tw = self.target_weights(target)
        hw, ht = self.half_widths(level, tw)
        t = float(y @ tw)
        return {"method": self.method, "mixture": dict(zip(self.table.weights, W[0].tolist())),
                "domains": {name: {"loss": float(v), "loss_lo": float(v * np.exp(-h)),
                                   "loss_hi": float(v * np.exp(h))} for name, v, h in zip(self.table.domains, y, hw)},
                "target": {"loss": t, "loss_lo": t * float(np.exp(-ht)), "loss_hi": t * float(np.exp(ht)),
                           "level": level, "weights": target or "mean"},
                "interval": f"split-conformal: {FOLDS}-fold out-of-fold residuals of the {len(self.table.W)} runs"}

    def mixture_vector(self, w: dict[str, float]) -> np.ndarray:
        names = self.table.weights
        unknown = [k for k in w if k not in names]
        if unknown:
            raise UserError(f"--mixture: {unknown[0]!r} is not a domain of this fit; its domains are "
                            f"{', '.join(names)}")
        v = np.array([[w.get(k, 0.0) for k in names]], float)
        if (v < 0).any() or v.sum() <= 0:
            raise UserError("--mixture: proportions must be >= 0 with a positive sum")
        if abs(v.sum() - 1) > 0.01:
            raise UserError(f"--mixture: proportions sum to {v.sum():.4g}, not 1")
        return v / v.sum()

    def save(self, path) -> None:
        t = self.table
        atomic_write_json(path, {
            "kind": KIND, "method": self.method, "weights": t.weights, "domains": t.domains,
            "W": t.W.tolist(), "Y": t.Y.tolist(), "scale": None if t.scale is None else t.scale.tolist(),
            "oof": self.oof.tolist(), "notes": t.notes,
            # a gradient-boosted model is refitted from the runs on load (deterministic): no pickle in a fit file
            "states": None if self.method == "regmix" else self.states})

    @classmethod
    def load(cls, path) -> FittedMixture:
        d = read_json(path, "mixture fit")
        try:
            t = MixtureTable(d["weights"], d["domains"], np.array(d["W"], float), np.array(d["Y"], float),
                             None if d["scale"] is None else np.array(d["scale"], float), d.get("notes", []))
            states = d["states"] if d["states"] is not None else _fit_all(d["method"], t, np.arange(len(t.W)))
            return cls(d["method"], t, states, np.array(d["oof"], float))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path} is not a mixture fit written by `scalelab fit --mixture --out`") from None


def parse_mixture(text: str, what: str = "--mixture") -> dict[str, float]:
    """'web=0.6,code=0.4' -> {'web': 0.6, 'code': 0.4}."""
    out = {}
    for item in filter(None, (text or "").split(",")):
        k, eq, v = item.partition("=")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            eq = ""
        if not eq:
            raise UserError(f"{what} takes DOMAIN=NUMBER pairs (e.g. web=0.6,code=0.4), got {item!r}")
    if not out:
        raise UserError(f"{what} takes DOMAIN=NUMBER pairs (e.g. web=0.6,code=0.4)")
    return out
