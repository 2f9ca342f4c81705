"""Fitting methods as estimators: a method is (form, objective, which points, selection, intervals)
with `fit(table) -> FittedLaw`, its arguments validated before any work (scikit-learn's contract).

    from scalelab.laws.methods import METHODS
    law = METHODS["chinchilla"].fit(table)          # a FittedLaw with bootstrap samples
    law.predict(N, D); law.interval(law.predict_samples(N, D))

The back-test (laws/backtest.py) scores every registered method on public ladders.
"""

from __future__ import annotations

from dataclasses import dataclass

from scalelab.errors import UserError
from scalelab.laws.fitting import fit_approach3
from scalelab.laws.forms import FORMS
from scalelab.laws.law import FittedLaw
from scalelab.laws.selection import leave_largest_out
from scalelab.laws.table import RunTable

OBJECTIVES = ("huber", "huber-likelihood")


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

    def validate(self) -> Method:
        fittable = sorted(k for k, f in FORMS.items() if f.theta_names)
        for form in (self.form, *self.select):
            if form not in fittable:
                raise UserError(f"method {self.name}: form {form!r} cannot be fitted; choose from {fittable}")
        if self.objective not in OBJECTIVES:
            raise UserError(f"method {self.name}: objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.bootstrap < 0:
            raise UserError(f"method {self.name}: bootstrap must be >= 0, got {self.bootstrap}")
        return self

    def fit(self, table: RunTable) -> FittedLaw:
        self.validate()
        form = self.form
        if self.select:
            form = leave_largest_out(table, forms=self.select, k=1)[0]["form"]
        law = fit_approach3(table, form=form, objective=self.objective, bootstrap=self.bootstrap, seed=self.seed)
        law.info["method"] = self.name
        return law


METHODS: dict[str, Method] = {m.name: m.validate() for m in (
    Method("chinchilla"),
    Method("kaplan", form="kaplan"),
    Method("overtraining", form="overtraining"),
    Method("compute", form="compute"),
    Method("select-llo", select=("chinchilla", "kaplan", "overtraining")),  # the demo's choice today
)}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UserError(f"methods: unknown method {name!r}; choose from {', '.join(METHODS)}", arg="methods")
    return METHODS[name]
