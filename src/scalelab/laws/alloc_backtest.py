"""The allocation back-test: how well does a method place compute? Fit on the smaller IsoFLOP budgets,
forecast the compute-optimal N* (and D* = C / 6N*, tokens per parameter D*/N*) at larger ones, and
score against the truth.

Truth, two kinds:
- **public IsoFLOP sweeps** (Open-Athena's collection: `scalelab data list`, isoflops-open-athena; curator-
  flagged outliers left out): each held-out budget's own optimum, the vertex of a parabola in ln N
  through the points of its valley (within 0.5 decade of its lowest loss), with a standard error from a
  bootstrap of those points. Budgets whose valley is not bracketed are not scored. Marin's three
  ladders are kept untouched (no choice is tuned on them) and reported apart.
- **synthetic ladders** drawn from known laws (Chinchilla and Kaplan forms, exponents 0.26-0.42, noise
  0.3-1%, grids 0.9-2 decades wide, centred or 0.3 decade off-centre): N* is exact. The ladders of
  seeds >= SYNTHETIC_TUNED are untouched.

Scores: |log10 error| of N* (at a fixed C, D*'s is the same and tokens per parameter's twice it); the
stated interval covers when the truth lies inside it widened by the truth's own error (in quadrature).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scalelab import datasets
from scalelab.errors import UserError
from scalelab.laws import intervals
from scalelab.laws.alloc_methods import AllocationMethod
from scalelab.laws.backtest import map_tasks
from scalelab.laws.fitting import near_valley
from scalelab.laws.intervals import inside, z_of
from scalelab.laws.law import FittedLaw
from scalelab.laws.synthetic import isoflop_table
from scalelab.laws.table import load_table

UNTOUCHED_SOURCES = ("marin_202603",)
TRUTH_WINDOW_DEX = 0.5
SYNTHETIC_TUNED = 16  # synthetic seeds 0..15 may be tuned on; the next ones are untouched
SYNTHETIC_BUDGETS = np.geomspace(1e18, 1e20, 5)
SYNTHETIC_TARGETS = (1e21, 1e22)  # 10x and 100x the largest fitted budget


@dataclass
class AllocSplit:
    """Fit ``train`` (a run table with a `budget` column); forecast N* at each target's C."""

    dataset: str
    untouched: bool
    train: pd.DataFrame
    targets: pd.DataFrame  # C, N_true, sd_ln (the truth's standard error in ln N; 0 when exact)
    synthetic: bool = False


# ---- public sweeps ----------------------------------------------------------------------------------

def vertex(logN: np.ndarray, loss: np.ndarray) -> float | None:
    """ln N at the parabola's minimum through the valley's points; None when it is not bracketed."""
    m = near_valley(logN, loss, TRUTH_WINDOW_DEX)
    if m.sum() < 3:
        return None
    with warnings.catch_warnings():  # a bootstrap draw may repeat too few sizes
        warnings.simplefilter("ignore", np.exceptions.RankWarning)
        p2, p1, _ = np.polyfit(logN[m], loss[m], 2)
    x = -p1 / (2 * p2) if p2 > 0 else None
    return x if x is not None and logN[m].min() < x < logN[m].max() else None


def budget_optimum(g: pd.DataFrame, n_boot: int = 200, seed: int = 0) -> tuple[float, float] | None:
    """(N*, standard error of ln N*) of one IsoFLOP curve, or None if its valley is not bracketed."""
    logN, loss = np.log(g["N"].to_numpy(float)), g["loss"].to_numpy(float)
    x = vertex(logN, loss)
    if x is None:
        return None
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        i = rng.choice(len(logN), len(logN))
        if len(np.unique(logN[i])) >= 3:
            v = vertex(logN[i], loss[i])
            if v is not None:
                draws.append(v)
    return float(np.exp(x)), float(np.std(draws)) if len(draws) > 10 else np.inf


def public_sweeps() -> dict[str, pd.DataFrame]:
    """Each experiment of the Open-Athena collection: run, N, D, budget, loss (outliers left out)."""
    d = datasets.load("isoflops-open-athena")
    d = d[~d["outlier"].astype(bool)]
    out = {}
    for name, g in d.groupby("experiment", sort=True):
        out[name] = pd.DataFrame({"run": np.arange(len(g)).astype(str), "N": g["params"].to_numpy(float),
                                  "D": g["tokens"].to_numpy(float), "budget": g["budget"].to_numpy(float),
                                  "loss": g["loss"].to_numpy(float), "source": g["source"].to_numpy()})
    return out


def public_splits(ratios=(4.0, 16.0), min_budgets: int = 3) -> list[AllocSplit]:
    """Per experiment, cut-offs whose largest held-out budget is nearest ``ratios`` x the largest fitted
    one (at least ``min_budgets`` fitted); every bracketed held-out budget is a target."""
    splits = []
    for name, d in public_sweeps().items():
        budgets = np.sort(d["budget"].unique())
        truths = {c: budget_optimum(d[d["budget"] == c]) for c in budgets}
        chosen = set()
        for want in ratios:
            cands = [i for i in range(min_budgets - 1, len(budgets) - 1)]
            if not cands:
                continue
            i = min(cands, key=lambda i: abs(np.log(budgets[-1] / budgets[i] / want)))
            if i in chosen or not 0.5 < budgets[-1] / budgets[i] / want < 2:
                continue
            chosen.add(i)
            held = [(c, *truths[c]) for c in budgets[i + 1:] if truths[c] is not None]
            if held:
                splits.append(AllocSplit(name, d["source"].iloc[0] in UNTOUCHED_SOURCES,
                                         d[d["budget"] <= budgets[i]].drop(columns="source"),
                                         pd.DataFrame(held, columns=["C", "N_true", "sd_ln"])))
    return splits


# ---- synthetic ladders -------------------------------------------------------------------------------

def synthetic_truth(seed: int) -> tuple[FittedLaw, dict]:
    """A known law and an IsoFLOP design, drawn from seed: the law's form, exponents, noise, grid."""
    rng = np.random.default_rng(1000 + seed)
    alpha, beta = rng.uniform(0.26, 0.42, 2)
    if seed % 4 == 3:  # a quarter from Kaplan et al.'s form, whose optimum is not Chinchilla's closed form
        law = FittedLaw("kaplan", {"Nc": 10 ** rng.uniform(13, 14.5), "Dc": 10 ** rng.uniform(13, 14),
                                   "alpha_N": alpha / 4, "alpha_D": beta / 4})
    else:
        law = FittedLaw("chinchilla", {"E": rng.uniform(1.6, 2.1), "A": 10 ** rng.uniform(2.3, 3.0),
                                       "B": 10 ** rng.uniform(2.6, 3.5), "alpha": alpha, "beta": beta})
    design = {"sizes_per_budget": int(rng.integers(6, 10)), "span": float(10 ** rng.uniform(0.9, 2.0)),
              "noise": float(rng.uniform(0.003, 0.01)), "shift_dex": float(rng.choice([0.0, 0.0, -0.3, 0.3]))}
    return law, design


def synthetic_splits(n: int) -> list[AllocSplit]:
    out = []
    for seed in range(n):
        law, design = synthetic_truth(seed)
        train = isoflop_table(law, SYNTHETIC_BUDGETS, seed=seed, **design)
        truth = law.allocate(np.array(SYNTHETIC_TARGETS))["N_opt"]
        out.append(AllocSplit(f"synthetic-{seed}", seed >= SYNTHETIC_TUNED, train,
                              pd.DataFrame({"C": SYNTHETIC_TARGETS, "N_true": truth, "sd_ln": 0.0}), True))
    return out


# ---- scoring -------------------------------------------------------------------------------------------

def score(method: AllocationMethod, split: AllocSplit, level: float = 0.9) -> list[dict]:
    """One row per target: N* forecast, its bootstrap interval, the truth and the log10 error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            law = method.fit(load_table(split.train))
        except UserError as e:
            return [{"dataset": split.dataset, "method": method.name, "error": str(e)}]
        C = split.targets["C"].to_numpy(float)
        r = law.allocate_with_interval(C, level=level, calibrated=False)
    c_fit = float(split.train["budget"].max())
    rows = []
    for j, c in enumerate(C):
        n_true, n_pred = float(split.targets["N_true"].iloc[j]), float(r["N_opt"][j])
        rows.append({"dataset": split.dataset, "family": "synthetic" if split.synthetic else "public",
                     "untouched": split.untouched, "method": method.name, "C": float(c), "ratio": c / c_fit,
                     "N_true": n_true, "sd_ln": float(split.targets["sd_ln"].iloc[j]), "N_pred": n_pred,
                     "boot_lo": float(r["N_opt_lo"][j]) if "N_opt_lo" in r else n_pred,
                     "boot_hi": float(r["N_opt_hi"][j]) if "N_opt_hi" in r else n_pred,
                     "log10_error": float(np.log10(n_pred / n_true))})
    return rows


def _points(rows: pd.DataFrame) -> dict:
    """The rows as laws/intervals.py's held-out points (N* in place of the loss, the truth's own error)."""
    get = lambda k: rows[k].to_numpy(float)  # noqa: E731
    return {"pred": get("N_pred"), "lo": get("boot_lo"), "hi": get("boot_hi"), "ratio": get("ratio"),
            "actual": get("N_true"), "sd": get("sd_ln")}


def covered(rows: pd.DataFrame, sigma_dec: float, level: float = 0.9) -> np.ndarray:
    """Whether each truth lies in the stated interval (eq. 1 of laws/intervals.py on the bootstrap's),
    widened in quadrature by the truth's own error at the same level."""
    return inside(sigma_dec, _points(rows), level)


def weights(rows: pd.DataFrame) -> np.ndarray:
    """Synthetic and public truths weigh half each; within each, every ladder the same."""
    w = np.zeros(len(rows))
    for _, g in rows.groupby("family"):
        per = g.groupby("dataset")["dataset"].transform("size").to_numpy(float)
        w[rows.index.get_indexer(g.index)] = 1.0 / (per * g["dataset"].nunique())
    return w / w.sum()


def fit_sigma(rows: pd.DataFrame, level: float = 0.9, hi: float = 2.0) -> float:
    """The smallest sigma_dec (ln N* per decade of extrapolation) whose intervals cover ``level`` of the
    weighted rows (laws/intervals.py `fit_sigma`); ``hi`` when even that does not reach it."""
    try:
        return intervals.fit_sigma({**_points(rows), "weight": weights(rows)}, level, hi)
    except UserError:
        return hi


# ---- the suite -------------------------------------------------------------------------------------------

FACTOR_TOLERANCE = 1.25  # "within tolerance": N* within this factor of the truth


def _score_task(task) -> list[dict]:
    method, split, level = task
    return score(method, split, level)


def run_alloc_backtest(methods: list[AllocationMethod], n_synthetic: int = 24, level: float = 0.9,
                       workers: int = 1, public: bool = True, progress=None) -> dict:
    """Score every method on every split; learn each method's sigma_dec on its tuned-on rows and report
    coverage with it, the untouched rows apart. -> {"rows", "summary", "sigma", "failed"}."""
    for m in methods:
        m.validate()
    z_of(level)
    splits = (public_splits() if public else []) + synthetic_splits(n_synthetic)
    out = map_tasks(_score_task, [(m, s, level) for s in splits for m in methods], workers, progress)
    failed = [r for r in out if "error" in r]
    df = pd.DataFrame([r for r in out if "error" not in r])
    sigma = {m: fit_sigma(g[~g["untouched"]].reset_index(drop=True), level) for m, g in df.groupby("method")}
    df["covered_bootstrap"] = _covered_by_method(df, {m: 0.0 for m in sigma}, level)
    df["covered"] = _covered_by_method(df, sigma, level)
    return {"level": level, "rows": df.to_dict("records"), "summary": summarize(df), "sigma": sigma,
            "failed": failed}


def _covered_by_method(df: pd.DataFrame, sigma: dict, level: float) -> np.ndarray:
    out = np.zeros(len(df), bool)
    for m, g in df.groupby("method"):
        out[df.index.get_indexer(g.index)] = covered(g, sigma[m], level)
    return out


def summarize(df: pd.DataFrame) -> list[dict]:
    """Per method and part (synthetic / public x tuned-on / untouched): errors and coverage."""
    rows = []
    for (m, fam, untouched), g in df.groupby(["method", "family", "untouched"], sort=False):
        err = g["log10_error"].abs()
        rows.append({"method": m, "data": f"{fam}, {'untouched' if untouched else 'tuned-on'}", "points": len(g),
                     "ladders": int(g["dataset"].nunique()), "median_abs_log10_error": float(err.median()),
                     "worst_abs_log10_error": float(err.max()),
                     "within_factor": float((err <= np.log10(FACTOR_TOLERANCE)).mean()),
                     "coverage_bootstrap": float(g["covered_bootstrap"].mean()), "coverage": float(g["covered"].mean()),
                     "median_ratio": float(g["ratio"].median())})
    order = {"synthetic, tuned-on": 0, "synthetic, untouched": 1, "public, tuned-on": 2, "public, untouched": 3}
    return sorted(rows, key=lambda r: (list(dict.fromkeys(df["method"])).index(r["method"]), order[r["data"]]))
