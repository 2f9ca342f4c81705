"""A ladder's curves as one estimator: a curve law per size, its trend in N, and calibrated intervals.

``CurveMethod(form).fit(CurveTable) -> FittedCurves``; ``FittedCurves.forecast(N, lr, ...)`` gives the loss
at every step of a run of N parameters under the per-step rates ``lr``, with an interval:

1. At a fitted size, the size's own law (`laws.curves.fit_curves` on every curve of that size).
2. At another size, each parameter's trend in log N through the fitted sizes (`laws.curves.trend_params`;
   needs two sizes or more).
3. The interval is multiplicative, exp(+-z sigma), with sigma^2 = rmse^2 + sigma_schedule^2 +
   (sigma_size_per_decade * decades past the fitted sizes)^2: rmse is the fit's own relative error,
   the other two come from `scalelab backtest --curves` (`CALIBRATION`, measured on the Multi-Power Law's
   public curves: sigma_schedule on the 25M and 100M models' unseen schedules, checked on 400M's;
   sigma_size from the one size extrapolation those curves allow, 25M+100M -> 400M, so in-sample).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scalelab.errors import UserError
from scalelab.io import atomic_write_json, read_json
from scalelab.laws.curve_table import CurveTable
from scalelab.laws.curves import (
    CALIBRATION,
    FORMS,
    Curve,
    FittedCurveLaw,
    JointCurveLaw,
    fit_curves,
    fit_joint,
    trend_params,
    warmup_end,
)
from scalelab.laws.intervals import z_of

KIND = "curves"  # what a curve fit file declares (`io.json_kind`)
SAME_SIZE_RTOL = 0.01  # a requested N within 1% of a fitted size uses that size's own law
MAX_CURVE_POINTS = 200


ACROSS = ("trend", "joint")
DEFAULT_FORM = "momentum-q"  # best on the 25M and 100M public curves' unseen schedules (400M kept apart): LOG


@dataclass(frozen=True)
class CurveMethod:
    """Fit a curve law to every size of a `CurveTable` (``form``: one of `laws.curves.FORMS`). ``across``: how a
    new size is reached: "trend" (each parameter's line in log N through the per-size fits) or "joint" (one fit
    of every curve of every size, the loss floor L0(N) = E + A_N N^-alpha_N and the other parameters shared:
    `laws.curves.fit_joint`)."""

    form: str = DEFAULT_FORM
    across: str = "trend"

    def __post_init__(self):
        if self.form not in FORMS:
            raise UserError(f"curve law must be one of {', '.join(FORMS)}, got {self.form!r}")
        if self.across not in ACROSS:
            raise UserError(f"--across must be one of {', '.join(ACROSS)}, got {self.across!r}")

    def fit(self, table: CurveTable) -> FittedCurves:
        if self.across == "joint":
            return self._fit_joint(table)
        sizes, rmse = {}, {}
        need = len(FORMS[self.form].params) + 1
        for n, cs in table.by_size.items():
            if (pts := sum(len(c.steps) for c in cs)) < need:
                raise UserError(f"size N = {n:.4g} has {pts} loss point(s) after warmup; the {self.form} law needs "
                                f"{need} or more per size: log more evaluations (a ladder's evals_per_run) "
                                f"or use --method momentum (5 parameters)")
            law = fit_curves(cs, self.form)
            sizes[n], rmse[n] = law.params, law.info["rmse_relative"]
        return FittedCurves(self.form, sizes, self._info(table, rmse))

    def _info(self, table: CurveTable, rmse: dict) -> dict:
        warm = [c.warmup_steps for c in table.curves]
        tps = list(table.tokens_per_step.values())
        return {"runs": {n: [c.name for c in cs] for n, cs in table.by_size.items()}, "rmse_relative": rmse,
                "points": sum(len(c.steps) for c in table.curves), "peak_lr": table.peak_lr,
                "warmup_steps": int(np.median(warm)), "tokens_per_step": float(np.median(tps)) if tps else None,
                "max_steps": int(max(c.steps.max() for c in table.curves)), "across": self.across,
                "by_size": [{"N": n, "max_steps": int(max(c.steps.max() for c in cs)),
                             "peak_lr": float(max(c.lr.max() for c in cs))} for n, cs in table.by_size.items()],
                "calibration": CALIBRATION[self.form], "notes": table.notes}

    def _fit_joint(self, table: CurveTable) -> FittedCurves:
        if len(table.by_size) < 3:
            raise UserError(f"--across joint fits L0(N) = E + A_N N^-alpha_N: it needs curves of 3 sizes or more, "
                            f"the table has {len(table.by_size)}")
        joint = fit_joint(table.by_size, self.form)
        sizes = {n: joint.at(n) for n in table.by_size}
        rmse = {n: joint.info["rmse_relative"] for n in table.by_size}
        info = self._info(table, rmse)
        info["joint"] = joint.params
        return FittedCurves(self.form, sizes, info)


@dataclass
class FittedCurves:
    form: str
    sizes: dict[float, dict]
    """N -> the law's parameters at that size."""
    info: dict = field(default_factory=dict)

    def law_at(self, n: float) -> tuple[FittedCurveLaw, float, float]:
        """The law at N, the fit's relative rmse there, and the decades of N past the fitted sizes."""
        ns = np.array(sorted(self.sizes))
        near = ns[np.argmin(np.abs(np.log(ns / n)))]
        if self.info.get("joint"):
            decades = max(0.0, np.log10(n / ns.max()), np.log10(ns.min() / n))
            joint = JointCurveLaw(self.form, self.info["joint"])
            return FittedCurveLaw(self.form, joint.at(n)), self.info["rmse_relative"][near], float(decades)
        if abs(near / n - 1) <= SAME_SIZE_RTOL:
            return FittedCurveLaw(self.form, self.sizes[near]), self.info["rmse_relative"][near], 0.0
        if len(ns) < 2:
            raise UserError(f"the curves were fitted at one size (N = {near:.4g}); forecasting N = {n:.4g} needs "
                            f"curves of two sizes or more")
        decades = max(0.0, np.log10(n / ns.max()), np.log10(ns.min() / n))
        rmse = float(np.sqrt(np.mean([v ** 2 for v in self.info["rmse_relative"].values()])))
        return FittedCurveLaw(self.form, trend_params(self.sizes, n)), rmse, float(decades)

    def sigma(self, rmse: float, decades: float) -> float:
        cal = self.info.get("calibration") or CALIBRATION[self.form]
        return float(np.sqrt(rmse ** 2 + cal["sigma_schedule"] ** 2 + (cal["sigma_size_per_decade"] * decades) ** 2))

    def forecast(self, n: float, lr: np.ndarray, tokens_per_step: float, level: float = 0.9,
                 max_points: int = MAX_CURVE_POINTS) -> dict:
        """The curve of a run of ``n`` parameters trained with the per-step rates ``lr`` (index 0..T) at
        ``tokens_per_step``: at most ``max_points`` evenly spaced steps after warmup, the last one included."""
        law, rmse, decades = self.law_at(n)
        lr = np.asarray(lr, float)
        if lr.max() <= 0:
            raise UserError("the schedule's learning rates are all zero")
        warmup = warmup_end(lr)
        last = len(lr) - 1
        steps = np.unique(np.linspace(max(warmup, 1), last, min(max_points, last - warmup + 1)).round().astype(int))
        loss = law.predict(Curve("forecast", lr, steps, np.ones(len(steps)), warmup))
        sig = self.sigma(rmse, decades)
        z = z_of(level)
        lo, hi = loss * np.exp(-z * sig), loss * np.exp(z * sig)
        curve = [{"step": int(s), "tokens": float(s * tokens_per_step), "loss": float(v), "loss_lo": float(a),
                  "loss_hi": float(b)} for s, v, a, b in zip(steps, loss, lo, hi)]
        return {"N": float(n), "steps": int(last), "tokens": float(last * tokens_per_step), "form": self.form,
                "warnings": self.outside_the_backtest(n, last, float(lr.max())),
                "final": {"loss": curve[-1]["loss"], "loss_lo": curve[-1]["loss_lo"], "loss_hi": curve[-1]["loss_hi"],
                          "level": level},
                "sigma_relative": sig, "size_extrapolation_decades": decades,
                "step_extrapolation_ratio": last / self.info["max_steps"], "curve": curve}

    def outside_the_backtest(self, n: float, steps: int, peak_lr: float) -> list[str]:
        """What the calibrated interval does not cover, as `backtest --curves` and scalelab's own ladder measured
        it: a run far longer than the fitted ones of the nearest size, or one at another peak rate."""
        sizes = self.info.get("by_size") or []
        if not sizes:
            return []
        near = min(sizes, key=lambda s: abs(np.log(s["N"] / n)))
        out = []
        if (ratio := steps / near["max_steps"]) > 2:
            out.append(f"{ratio:.1f}x the steps of the longest fitted run of the nearest size (N = {near['N']:.4g}): "
                       f"in `backtest --curves` forecasts beyond 2x the fitted horizon erred by 3.7-6.6% (median, "
                       f"open_lm) and half fell outside their intervals; this interval does not include that")
        if abs(np.log(peak_lr / near["peak_lr"])) > np.log(1.25):
            out.append(f"this schedule peaks at lr {peak_lr:.3g}, the fitted curves of N = {near['N']:.4g} at "
                       f"{near['peak_lr']:.3g}: the laws see the rate only through its sums (on scalelab's own "
                       f"ladder such a forecast erred by +9% to +14%); this interval does not include that")
        return out

    def save(self, path) -> None:
        info = dict(self.info)
        info["runs"] = {repr(k): v for k, v in info["runs"].items()}
        info["rmse_relative"] = [[k, v] for k, v in info["rmse_relative"].items()]
        atomic_write_json(path, {"kind": KIND, "form": self.form,
                                 "sizes": [{"N": n, "params": p} for n, p in self.sizes.items()], "info": info})

    @classmethod
    def load(cls, path) -> FittedCurves:
        d = read_json(path, "curve fit")
        try:
            sizes = {float(s["N"]): dict(s["params"]) for s in d["sizes"]}
            info = dict(d["info"])
            info["rmse_relative"] = {float(k): float(v) for k, v in info["rmse_relative"]}
            return cls(d["form"], sizes, info)
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path} is not a curve fit written by `scalelab fit --curves --out`") from None


def calibrate(rows: list[dict], form: str, calibration_sizes=("25M", "100M"),
              size_model: str = "400M from 25M+100M", size_decades: float = float(np.log10(4))) -> dict:
    """`CALIBRATION`'s sigmas from the rows of `scalelab backtest --curves`: the RMS of the unseen schedules'
    final log errors at ``calibration_sizes``, and the size extrapolation's RMS final log error per decade."""
    fin = [np.log1p(r["final_error"]) for r in rows
           if r["form"] == form and r["model"] in calibration_sizes and r["split"] == "unseen"]
    size = [np.log1p(r["final_error"]) for r in rows if r["form"] == form and r["model"] == size_model]
    return {"sigma_schedule": float(np.sqrt(np.mean(np.square(fin)))),
            "sigma_size_per_decade": float(np.sqrt(np.mean(np.square(size)))) / size_decades}
