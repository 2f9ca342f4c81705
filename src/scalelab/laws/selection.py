"""Held-out evaluation and model selection: which law extrapolates best inside your own data?

* ``holdout``: fit on the runs below a compute threshold, predict the runs above it, report the
  relative error of each held-out run.
* ``leave_largest_out``: for each of the k largest budgets, fit on everything smaller and predict
  that budget; the mean absolute relative error ranks the forms. The law used for extrapolation is
  the one that extrapolated best in the user's own data.
"""

from __future__ import annotations

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fitting import fit_approach3, isoflop_groups
from scalelab.laws.table import RunTable

DEFAULT_FORMS = ("chinchilla", "kaplan", "overtraining", "compute")


def holdout(table: RunTable, form: str = "chinchilla", c_max: float | None = None, **fit_kw) -> dict:
    """Fit on C <= c_max (default: everything below the largest budget), predict the rest."""
    labels = isoflop_groups(table)
    budgets = np.unique(labels)
    if c_max is None:
        if len(budgets) < 2:
            raise UserError("hold-out needs at least two compute budgets")
        c_max = budgets[-2]
    train, test = labels <= c_max, labels > c_max
    if test.sum() == 0:
        raise UserError(f"no runs above C={c_max:.3g} to hold out")
    law = fit_approach3(table.subset(train), form=form, **fit_kw)
    pred = law.predict(table.N[test], table.D[test])
    actual = table.loss[test]
    rel = (pred - actual) / actual
    return {"form": form, "c_max": float(c_max), "n_train": int(train.sum()), "n_test": int(test.sum()),
            "predicted": pred.tolist(), "actual": actual.tolist(), "relative_error": rel.tolist(),
            "mean_abs_relative_error": float(np.mean(np.abs(rel))), "law": law}


def leave_largest_out(table: RunTable, forms=DEFAULT_FORMS, k: int = 2, **fit_kw) -> list[dict]:
    labels = isoflop_groups(table)
    budgets = np.unique(labels)
    if len(budgets) < k + 1:
        k = len(budgets) - 1
    if k < 1:
        raise UserError("cross-validation needs at least two compute budgets")
    rows = []
    for form in forms:
        errs = []
        for c in budgets[-k:]:
            train = labels < c
            test = labels == c
            try:
                law = fit_approach3(table.subset(train), form=form, **fit_kw)
            except UserError:
                errs = None
                break
            pred = law.predict(table.N[test], table.D[test])
            errs.extend(np.abs(pred - table.loss[test]) / table.loss[test])
        rows.append({"form": form, "folds": k,
                     "mean_abs_relative_error": float(np.mean(errs)) if errs else float("nan")})
    rows.sort(key=lambda r: (np.isnan(r["mean_abs_relative_error"]), r["mean_abs_relative_error"]))
    return rows


def choose_form(table: RunTable, forms=DEFAULT_FORMS, k: int = 2, **fit_kw) -> tuple[str, list[dict]]:
    ranking = leave_largest_out(table, forms, k, **fit_kw)
    return ranking[0]["form"], ranking
