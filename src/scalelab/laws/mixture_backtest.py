"""`scalelab backtest --mixtures`: the mixture laws on public mixture runs.

RegMix (Liu et al. 2024, MIT; dataset `regmix-pile`): every method is fitted on the 512 training mixtures at 1M
parameters, then scored
1. on the 256 test mixtures at 1M: error and interval coverage of every domain's loss and of the target;
2. on the same 256 mixtures at 60M and on 64 other mixtures at 1B: rank correlation (Spearman) of the forecast
   target with the measured one (RegMix's own claim: the ranking transfers; absolute losses do not);
3. with a few target-size runs allowed (16, drawn with a fixed seed): an affine map per domain from the 1M
   forecast to the target size, fitted on those runs, then error and coverage on the others (intervals from the
   16 runs' leave-one-out residuals).
The default method is chosen on 60M (tuned-on); 1B is reported apart (untouched).

BiMix (Ge et al. 2024, Apache-2.0; `bimix-losses`): one size and six mixtures per corpus; at the last step
the BiMix form (two parameters per domain) is fitted on the four entropy mixtures and scored on Baseline and
DoReMi. The other methods need more mixtures than domains and are not scored there.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from scalelab import datasets
from scalelab.laws.intervals import z_of
from scalelab.laws.mixture import (
    METHODS,
    REGRESSIONS,
    MixtureMethod,
    MixtureTable,
    conformal_half_width,
    read_mixtures,
)

TARGETS = {"mean": None, "pile_cc": "pile_cc"}
FEW_SHOT = 16


def regmix_tables() -> dict[str, MixtureTable]:
    d = datasets.load("regmix-pile")
    out = {}
    for (split, model), g in d.groupby(["split", "model"]):
        out["train" if split == "train" else model] = read_mixtures(g.drop(columns=["split", "model", "mixture_id"]))
    return out


def _target(Y: np.ndarray, tw: np.ndarray) -> np.ndarray:
    return Y @ tw


def _covered(pred, truth, half_log) -> float:
    with np.errstate(invalid="ignore"):  # a mapped forecast below zero is simply not covered
        return float(np.mean(np.abs(np.log(pred / truth)) <= half_log))


def score_regmix(method: str, tables: dict[str, MixtureTable], level: float = 0.9) -> list[dict]:
    fitted = MixtureMethod(method).fit(tables["train"])
    rows = []
    for tname, target in TARGETS.items():
        tw = fitted.target_weights(target)
        hw, ht = fitted.half_widths(level, tw)
        t = tables["1M"]
        P = fitted.predict(t.W)
        rows.append({"method": method, "data": "RegMix 1M test", "target": tname, "runs": len(t.W),
                     "spearman": float(spearmanr(_target(P, tw), _target(t.Y, tw))[0]),
                     "median_abs_error": float(np.median(np.abs(_target(P, tw) / _target(t.Y, tw) - 1))),
                     "coverage": _covered(_target(P, tw), _target(t.Y, tw), ht),
                     "domain_coverage": float(np.mean([_covered(P[:, j], t.Y[:, j], hw[j]) for j in range(len(hw))])),
                     "split": "tuned-on"})
        for size in ("60M", "1B"):
            t = tables[size]
            P = fitted.predict(t.W)
            rows.append({"method": method, "data": f"RegMix {size}", "target": tname, "runs": len(t.W),
                         "spearman": float(spearmanr(_target(P, tw), _target(t.Y, tw))[0]),
                         **_few_shot(P, t.Y, tw, level), "split": "tuned-on" if size == "60M" else "untouched"})
    return rows


def _few_shot(P: np.ndarray, Y: np.ndarray, tw: np.ndarray, level: float) -> dict:
    """An affine map per domain from the small-model forecast to the target size, fitted on FEW_SHOT runs."""
    with warnings.catch_warnings():  # a domain whose 1M forecast barely varies: polyfit says so, and maps flat
        warnings.simplefilter("ignore", np.exceptions.RankWarning)
        return _few_shot_map(P, Y, tw, level)


def _few_shot_map(P: np.ndarray, Y: np.ndarray, tw: np.ndarray, level: float) -> dict:
    rng = np.random.default_rng(0)
    cal = rng.choice(len(Y), FEW_SHOT, replace=False)
    rest = np.setdiff1d(np.arange(len(Y)), cal)
    mapped, loo = np.empty_like(P), np.empty((FEW_SHOT, P.shape[1]))
    for j in range(P.shape[1]):
        a, b = np.polyfit(P[cal, j], Y[cal, j], 1)[::-1]
        mapped[:, j] = a + b * P[:, j]
        for i in range(FEW_SHOT):  # leave-one-out: the interval's residuals
            keep = np.delete(cal, i)
            a_i, b_i = np.polyfit(P[keep, j], Y[keep, j], 1)[::-1]
            loo[i, j] = a_i + b_i * P[cal[i], j]
    res = np.log(_target(loo, tw) / _target(Y[cal], tw))
    half = conformal_half_width(res, level)
    pred, truth = _target(mapped[rest], tw), _target(Y[rest], tw)
    return {"few_shot_runs": FEW_SHOT, "few_shot_median_abs_error": float(np.median(np.abs(pred / truth - 1))),
            "few_shot_coverage": _covered(pred, truth, half)}


def score_bimix() -> list[dict]:
    d = datasets.load("bimix-losses")
    rows = []
    for corpus, g in d[d["domain"] != "avg"].groupby("corpus"):
        g = g[g["step"] == g["step"].max()]
        wide_w = g.pivot_table(index="mixture", columns="domain", values="proportion")
        wide_l = g.pivot_table(index="mixture", columns="domain", values="loss")
        fit_on = [m for m in ("SE", "JE", "CE", "VNE") if m in wide_w.index]
        test = [m for m in wide_w.index if m not in fit_on]
        fit, pred = REGRESSIONS["bimix"]
        errs = []
        for j, dom in enumerate(wide_w.columns):
            s = fit(wide_w.loc[fit_on].to_numpy(), None, wide_l.loc[fit_on, dom].to_numpy(), j)
            p = pred(s, wide_w.loc[test].to_numpy(), None, j)
            errs.append(p / wide_l.loc[test, dom].to_numpy() - 1)
        e = np.abs(np.array(errs))
        rows.append({"method": "bimix", "data": f"BiMix {corpus} (step {int(g['step'].max()):,})",
                     "target": "every domain", "runs": len(test), "fitted_on": ",".join(fit_on),
                     "scored_on": ",".join(test), "median_abs_error": float(np.median(e)),
                     "worst_abs_error": float(e.max()), "split": "untouched"})
    return rows


def run_mixture_backtest(methods: list[str] | None = None, level: float = 0.9) -> dict:
    methods = methods or list(METHODS)
    tables = regmix_tables()
    rows = [r for m in methods for r in score_regmix(m, tables, level)]
    if "bimix" in methods:
        rows += score_bimix()
    choice = pd.DataFrame([r for r in rows if r["data"] == "RegMix 60M"]).groupby("method")["spearman"].mean()
    return {"data": "RegMix public runs (512 train mixtures at 1M; test 256 at 1M and 60M, 64 at 1B) and BiMix",
            "level": level, "z": z_of(level), "rows": rows,
            "chosen_on_60M": str(choice.idxmax())}
