"""Allocation methods as estimators: `fit(table) -> FittedLaw` whose `allocate_with_interval(C)` gives
N*, D*, tokens per parameter and their intervals. The allocation back-test (laws/alloc_backtest.py)
scores them; its winner is `DEFAULT_ALLOCATION`, which `scalelab fit` fits beside the loss default and
`scalelab predict --compute` answers with.

    approach 2   each budget's optimum from a parabola in ln N, then N* = k C^a (Hoffmann et al. 2022)
    approach 2, valley   the same parabola through each budget's valley only (0.5 decade around its
                 lowest loss): the grid-width and off-centre bias Open-Athena 2026 measured, reduced
    approach 3   a loss surface (a registered loss method of laws/methods.py) minimised along C = 6ND
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fitting import fit_approach2
from scalelab.laws.law import FittedLaw
from scalelab.laws.methods import METHODS
from scalelab.laws.table import RunTable

CALIBRATION_SOURCE = "scalelab backtest --allocation, tuned-on sweeps and synthetic ladders (docs/LOG.md, 2026-12-06)"


@dataclass(frozen=True)
class AllocationMethod:
    name: str
    approach: str = "3"
    loss_method: str = "chinchilla"
    """approach 3: the loss method (laws/methods.py) whose surface is minimised."""
    window_dex: float | None = None
    """approach 2: fit each budget's parabola within this many decades of its lowest loss (None: all)."""
    bootstrap: int = 50
    seed: int = 0
    sigma_per_decade: float = 0.0
    """ln N* error per decade of extrapolation added to the bootstrap interval (laws/intervals.py eq. 1),
    learned on the allocation back-test's tuned-on data (0: the bootstrap alone)."""

    def validate(self) -> AllocationMethod:
        if self.approach not in ("2", "3"):
            raise UserError(f"allocation method {self.name}: approach must be 2 or 3, got {self.approach!r}")
        if self.approach == "3" and self.loss_method not in METHODS:
            raise UserError(f"allocation method {self.name}: unknown loss method {self.loss_method!r}")
        if self.bootstrap < 0 or self.sigma_per_decade < 0:
            raise UserError(f"allocation method {self.name}: bootstrap and sigma_per_decade must be >= 0")
        return self

    def fit(self, table: RunTable) -> FittedLaw:
        self.validate()
        if self.approach == "2":
            law = fit_approach2(table, bootstrap=self.bootstrap, seed=self.seed, warn=False,
                                window_dex=self.window_dex)
        else:
            law = replace(METHODS[self.loss_method], bootstrap=self.bootstrap, seed=self.seed).fit(table)
        law.info.update(self.fit_info(law))
        return law

    def fit_info(self, law: FittedLaw) -> dict:
        """What a fit of this method records: its name and, when calibrated, N*'s interval term."""
        info = {"allocation_method": self.name}
        if self.sigma_per_decade > 0:
            info["allocation_calibration"] = {"sigma_per_decade": self.sigma_per_decade,
                                              "C_max_fitted": law.info["C_max_fitted"], "source": CALIBRATION_SOURCE}
        return info


# sigma_per_decade: each method's own, learned by the allocation back-test of 2026-12-06 (90% intervals,
# tuned-on rows: 16 synthetic ladders and the Chinchilla and (Mis)Fitting sweeps; docs/LOG.md)
ALLOCATION_METHODS: dict[str, AllocationMethod] = {m.name: m.validate() for m in (
    AllocationMethod("approach2", approach="2", sigma_per_decade=0.202),
    AllocationMethod("approach2-valley", approach="2", window_dex=0.5, sigma_per_decade=0.290),
    AllocationMethod("chinchilla", sigma_per_decade=0.260),
    AllocationMethod("kaplan", loss_method="kaplan", sigma_per_decade=0.522),
    AllocationMethod("overtraining", loss_method="overtraining", sigma_per_decade=0.186),
    AllocationMethod("ensemble", loss_method="ensemble", sigma_per_decade=0.291),
)}

DEFAULT_ALLOCATION = "chinchilla"
"""What `scalelab fit` fits for N* and D*: the allocation back-test's choice (docs/LOG.md, 2026-12-06). N*
within 1.09x / 1.07x of the truth (median; tuned-on / untouched) on synthetic ladders at 10-100x, its
calibrated 90% intervals covering 94% / 88%; on held-out public budgets 1.08x / 1.06x, covering 93% / 100%.
approach2 errs less on the tuned-on synthetic ladders (1.05x) but 1.28x on the untouched public sweeps;
the loss default (ensemble) 1.35x / 1.59x synthetic, 1.17x / 1.48x public."""


def get_allocation_method(name: str, arg: str = "methods") -> AllocationMethod:
    if name not in ALLOCATION_METHODS:
        raise UserError(f"{arg}: unknown allocation method {name!r}; choose from {', '.join(ALLOCATION_METHODS)}",
                        arg=arg)
    return ALLOCATION_METHODS[name]


def attach_allocation(law: FittedLaw, table: RunTable, name: str = DEFAULT_ALLOCATION, seed: int = 0,
                      bootstrap: int | None = None) -> FittedLaw:
    """Fit allocation method ``name`` to ``table`` and keep it in ``law.info["allocation"]``, so the fit
    file answers `predict --compute` with the method the allocation back-test chose, even where the loss
    method differs. Nothing is attached when the law already is that method's fit."""
    m = get_allocation_method(name, arg="allocation")
    m = replace(m, seed=seed, bootstrap=m.bootstrap if bootstrap is None else bootstrap)
    if m.approach == "3" and law.info.get("method") == m.loss_method and law.samples:
        law.info.update(m.fit_info(law))
        return law
    alloc = m.fit(table)
    alloc.info.pop("fitted_points", None)
    law.info["allocation"] = {"method": m.name, "law": asdict(alloc)}
    return law


def allocation_law(law: FittedLaw) -> FittedLaw:
    """The law that answers N*, D* for ``law``: the allocation fit kept beside it, or the law itself."""
    kept = law.info.get("allocation")
    return FittedLaw(**kept["law"]) if kept else law


def allocation_forecast(law: FittedLaw, C: float, level: float = 0.9) -> dict:
    """N*, D*, tokens per parameter at budget ``C`` (from the allocation fit kept beside ``law``, if any)
    and the loss there (from ``law``), each with its interval and a line saying which interval it is."""
    alloc = allocation_law(law)
    r = alloc.allocate_with_interval(C, level=level)
    out = {k: (float(np.atleast_1d(v)[0]) if v is not None else None) for k, v in r.items() if k != "C"}
    out["C"] = C
    if alloc is not law:  # the loss at that optimum, from the loss fit with its own interval
        loss, lo, hi = law.predict_interval(out["N_opt"], out["D_opt"], level)
        out.pop("loss_lo", None), out.pop("loss_hi", None)
        out["loss"] = float(loss[0])
        if lo is not None:
            out.update(loss_lo=float(lo[0]), loss_hi=float(hi[0]))
    if out.get("loss") is None:
        out.pop("loss", None)
    if "N_opt_lo" in out:
        out["allocation_method"] = alloc.info.get("allocation_method") or alloc.form
        out["allocation_interval"] = ("bootstrap + extrapolation (calibrated on the allocation back-test)"
                                      if "allocation_calibration" in alloc.info else "bootstrap only (not calibrated)")
    return out
