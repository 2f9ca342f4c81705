"""Fitting methods as estimators: a method is (form, objective, which points, selection, intervals)
with `fit(table) -> FittedLaw`, its arguments validated before any work (scikit-learn's contract).

    from scalelab.laws.methods import METHODS
    law = METHODS["chinchilla"].fit(table)          # a FittedLaw with bootstrap samples
    law.predict(N, D); law.interval(law.predict_samples(N, D))

The back-test (laws/backtest.py) scores every registered method on public ladders.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from scalelab.errors import UserError
from scalelab.laws.fitting import fit_approach3
from scalelab.laws.forms import FORMS
from scalelab.laws.law import FittedLaw
from scalelab.laws.selection import leave_largest_out
from scalelab.laws.table import RunTable

OBJECTIVES = ("huber", "huber-likelihood")
CALIBRATION_SOURCE = "scalelab backtest, tuned-on datasets (docs/LOG.md, 2026-11-30)"


@dataclass(frozen=True)
class Method:
    name: str
    form: str = "chinchilla"
    """the law form fitted (laws/forms.py), unless ``select`` chooses one."""
    objective: str = "huber"
    select: tuple[str, ...] = ()
    """forms to choose among by leave-largest-budget-out error on the fitted table (empty: use ``form``)."""
    bootstrap: int = 50
    """resamples for the interval (0: no interval)."""
    seed: int = 0
    weight_power: float = 0.0
    """weight each point by (C / C_max)^p: p > 0 favours the largest runs (0: equal weights)."""
    per_run: bool = False
    """weight each point by 1 / (points of its run), so a long training curve counts as one run."""
    drop_smallest: float = 0.0
    """drop the runs in the bottom fraction of the table's log-compute range (Choshen et al. 2024)."""
    min_progress: float = 0.0
    """keep a curve's checkpoints at D >= this fraction of its run's final D (1.0: final points only)."""
    members: tuple[Method, ...] = ()
    """fit each of these methods and average their log predictions (form "ensemble"); the bootstrap
    resamples the same runs for every member, so draw i of the ensemble is the mean of the members' i-th."""
    sigma_per_decade: float = 0.0
    """log-error per decade of extrapolation added to the bootstrap interval (laws/intervals.py eq. 1;
    0: the bootstrap alone). Learned on the back-test's tuned-on datasets."""

    def validate(self) -> Method:
        fittable = sorted(k for k, f in FORMS.items() if f.theta_names)
        for m in self.members:
            m.validate()
        for form in (self.form, *self.select):
            if form not in fittable:
                raise UserError(f"method {self.name}: form {form!r} cannot be fitted; choose from {fittable}")
        if self.objective not in OBJECTIVES:
            raise UserError(f"method {self.name}: objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.bootstrap < 0:
            raise UserError(f"method {self.name}: bootstrap must be >= 0, got {self.bootstrap}")
        for key in ("drop_smallest", "min_progress"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise UserError(f"method {self.name}: {key} must be in [0, 1], got {getattr(self, key)}")
        if self.sigma_per_decade < 0:
            raise UserError(f"method {self.name}: sigma_per_decade must be >= 0, got {self.sigma_per_decade}")
        if not -4.0 <= self.weight_power <= 4.0:
            raise UserError(f"method {self.name}: weight_power must be in [-4, 4], got {self.weight_power}")
        return self

    def min_points(self) -> int:
        """The fewest runs a fit needs: more than the largest form's parameter count (members included)."""
        forms = (self.form, *self.select)
        own = max(len(FORMS[f].param_names) for f in forms) + 1
        return max([own if not self.members else 0, *(m.min_points() for m in self.members)])

    def points(self, table: RunTable) -> tuple[RunTable, np.ndarray | None]:
        """The rows this method fits and their weights (None: equal)."""
        runs = table.run_ids()
        final_C = pd.Series(table.C).groupby(runs).transform("max").to_numpy()
        final_D = pd.Series(table.D).groupby(runs).transform("max").to_numpy()
        keep = table.D >= self.min_progress * final_D - 1e-9 * final_D
        if self.drop_smallest > 0:
            lo, hi = np.log(final_C.min()), np.log(final_C.max())
            keep &= np.log(final_C) >= lo + self.drop_smallest * (hi - lo) - 1e-12
        sub = table.subset(keep)
        if self.weight_power == 0 and not self.per_run:
            return sub, None
        w = (sub.C / sub.C.max()) ** self.weight_power
        if self.per_run:
            ids = sub.run_ids()
            w = w / pd.Series(ids).map(pd.Series(ids).value_counts()).to_numpy(float)
        return sub, w * len(w) / w.sum()

    def fit(self, table: RunTable) -> FittedLaw:
        self.validate()
        law = self._fit_ensemble(table) if self.members else self._fit_one(table)
        law.info["method"] = self.name
        law.info["fitted_points"] = {"N": table.N.tolist(), "D": table.D.tolist(), "loss": table.loss.tolist()}
        if self.sigma_per_decade > 0:
            law.info["calibration"] = {"sigma_per_decade": self.sigma_per_decade,
                                       "C_max_fitted": law.info["C_max_fitted"], "source": CALIBRATION_SOURCE}
        return law

    def _fit_ensemble(self, table: RunTable) -> FittedLaw:
        fits = [replace(m, bootstrap=self.bootstrap, seed=self.seed).fit(table) for m in self.members]
        members = [{"form": f.form, "params": f.params, "method": m.name} for f, m in zip(fits, self.members)]
        n = min(len(f.samples) for f in fits)
        samples = [{"members": [{"form": f.form, "params": f.samples[i]} for f in fits]} for i in range(n)]
        return FittedLaw("ensemble", {"members": members}, "3", samples,
                         {"n_points": len(table), "C_max_fitted": max(f.info["C_max_fitted"] for f in fits),
                          "param_convention": table.param_convention, "flops_convention": "C = 6 N D"})

    def _fit_one(self, table: RunTable) -> FittedLaw:
        form = self.form
        if self.select:
            form = leave_largest_out(table, forms=self.select, k=1)[0]["form"]
        sub, w = self.points(table)
        return fit_approach3(sub, form=form, objective=self.objective, bootstrap=self.bootstrap, seed=self.seed,
                             weights=w)


METHODS: dict[str, Method] = {m.name: m.validate() for m in (
    Method("chinchilla"),
    Method("kaplan", form="kaplan"),
    Method("overtraining", form="overtraining"),
    Method("compute", form="compute"),
    # The back-test's winner among averages of forms that tell N from D (bench/method_search.py, docs/LOG.md
    # 2026-11-30): the geometric mean of three forms, Kaplan's fitted with weights (C / C_max); its interval's
    # extrapolation term learned on the tuned-on datasets (bench/calibrate_intervals.py).
    Method("ensemble", members=(
        Method("chinchilla"),
        Method("kaplan+w1", form="kaplan", weight_power=1.0),
        Method("overtraining", form="overtraining")), sigma_per_decade=0.015),
)}


DEFAULT_METHOD = "ensemble"
"""What `scalelab fit` uses with no method flags: the best median error over the back-test suite."""


def get_method(name: str, arg: str = "methods") -> Method:
    if name not in METHODS:
        raise UserError(f"{arg}: unknown method {name!r}; choose from {', '.join(METHODS)}", arg=arg)
    return METHODS[name]
