"""Learning-rate schedules, forecast before they are trained (Luo et al. 2025, the Multi-Power Law).

At each size the lab trains two schedules (cosine and constant, evaluated ``evals`` times each) and fits a
curve law to them (`laws.curves`). The law then forecasts, *before* they train, the whole validation curve
of the schedules it never saw: WSD (a linear cooldown over the last 20%) and the schedule the fitted law
itself says is best for this step count (searched over the schedules scalelab trains: WSD with cooldowns
of 10-60% of the steps to 0-20% of the peak, and cosine to 0-10%). The forecasts go to ``forecast.json``
first; then those runs train, and the lab reports each forecast's error and whether its interval
(`laws.curves.CALIBRATION`) covered the run, and whether the law's schedule beats cosine, with the spread
over ``seeds`` seeds of both.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from scalelab.config import ScheduleConfig
from scalelab.errors import UserError
from scalelab.io import atomic_write_json, read_json
from scalelab.labs.common import (
    Shape,
    TrainSettings,
    begin,
    pyplot,
    savefig,
    train_or_load,
    write_report,
    write_summary,
)
from scalelab.labs.progress import LabProgress
from scalelab.laws.curves import CALIBRATION, FORMS, Curve, FittedCurveLaw, fit_curves, warmup_end
from scalelab.laws.intervals import z_of
from scalelab.laws.schedule_spec import schedule_lr
from scalelab.report.page import table_html
from scalelab.train.loop import load_dataset
from scalelab.train.rundir import RunDir

WARMUP_FRAC = 0.05
FITTED = {"cosine": ScheduleConfig("cosine", min_lr_ratio=0.1), "constant": ScheduleConfig("constant")}
WSD = ScheduleConfig("wsd", min_lr_ratio=0.1, decay_frac=0.2)
CANDIDATES = [ScheduleConfig("wsd", min_lr_ratio=m, decay_frac=d) for d in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
              for m in (0.0, 0.05, 0.1, 0.2)] + [ScheduleConfig("cosine", min_lr_ratio=m) for m in (0.0, 0.05, 0.1)]


@dataclass(frozen=True)
class SchedulesSpec(TrainSettings):
    sizes: tuple[str, ...] = ("32x2", "64x2")
    tokens: int = 1_200_000
    evals: int = 16
    """validation evaluations per run (the curve's points), evenly spaced."""
    seeds: int = 2
    """seeds of cosine and of the law's schedule (the others train once)."""
    law: str = "multi-power"

    def validate(self) -> SchedulesSpec:
        for s in self.sizes:
            Shape.parse(s)
        if self.law not in FORMS:
            raise UserError(f"law must be one of {', '.join(FORMS)}", arg="law")
        if self.evals < 5 or self.seeds < 1:
            raise UserError("evals must be >= 5 and seeds >= 1", arg="evals")
        if self.steps() < 4 * self.evals:
            raise UserError(f"tokens {self.tokens:,} give {self.steps()} steps, too few for {self.evals} evaluations; "
                            f"raise tokens", arg="tokens")
        return self

    def steps(self) -> int:
        return self.tokens // (self.batch_size * self.seq_len)


QUICK = dict(sizes=("32x1",), tokens=300_000, evals=8, seeds=1, eval_tokens=16_384)


def _spec_text(s: ScheduleConfig, warmup: int) -> str:
    """A trainer schedule in `--schedule` syntax (`laws.schedule_spec` gives the trainer's own rates)."""
    extra = f",decay={s.decay_frac}" if s.kind == "wsd" else ""
    return f"{s.kind}:warmup={warmup}" + (f",min={s.min_lr_ratio}{extra}" if s.kind != "constant" else "")


def _rates(spec: SchedulesSpec, s: ScheduleConfig) -> np.ndarray:
    """The rate of each logged step's update, as the laws read a run (index t: the update that made step t)."""
    steps = spec.steps()
    lr = schedule_lr(_spec_text(s, _warmup(spec)), steps, spec.lr)
    return np.r_[0.0, lr[:steps]]


def _warmup(spec: SchedulesSpec) -> int:
    return int(round(WARMUP_FRAC * spec.steps()))


def _config(spec: SchedulesSpec, size: str, s: ScheduleConfig, seed: int):
    cfg = replace(spec, seed=seed).run_config(size, spec.tokens, eval_every=max(1, spec.steps() // spec.evals),
                                              log_every=max(1, spec.steps() // spec.evals))
    return replace(cfg, schedule=replace(s, warmup_steps=_warmup(spec)))


def _curve(spec: SchedulesSpec, s: ScheduleConfig, run: RunDir) -> Curve:
    recs = [r for r in run.read_metrics() if r.evaluated]
    lr = _rates(spec, s)
    w = warmup_end(lr)
    recs = [r for r in recs if w <= r.step < len(lr)]
    return Curve(run.name, lr, [r.step for r in recs], [r.val_loss for r in recs], w)


def _name(size: str, label: str, seed: int) -> str:
    return f"{Shape.parse(size).name}-{label}-s{seed}"


def _train(spec, out, plan: dict, ds, log) -> dict:
    with LabProgress(out, {n: cfg for n, (_, _, _, cfg) in plan.items()}, "schedules lab"):
        for name, (*_, cfg) in plan.items():
            train_or_load(cfg, RunDir.under(out, name), ds, log)
    return {name: _curve(spec, s, RunDir.under(out, name)) for name, (_, _, s, _) in plan.items()}


def best_schedule(law: FittedCurveLaw, spec: SchedulesSpec) -> tuple[ScheduleConfig, list[dict]]:
    """The candidate whose forecast final loss is lowest, and every candidate's forecast."""
    rows = []
    for s in CANDIDATES:
        lr = _rates(spec, s)
        final = float(law.predict(Curve("c", lr, [spec.steps()], [1.0], warmup_end(lr)))[0])
        rows.append({"schedule": _spec_text(s, _warmup(spec)), "forecast_final_loss": final})
    i = int(np.argmin([r["forecast_final_loss"] for r in rows]))
    return CANDIDATES[i], rows


def _schedule_of(text: str, warmup: int) -> ScheduleConfig:
    """The candidate a forecast file names (`_spec_text`'s inverse over `CANDIDATES`)."""
    found = next((c for c in CANDIDATES if _spec_text(c, warmup) == text), None)
    if found is None:
        raise UserError(f"forecast.json names schedule {text!r}, not one this lab trains; delete the lab's folder")
    return found


def _forecast(law: FittedCurveLaw, c_steps: np.ndarray, lr: np.ndarray, w: int, sigma: float, z: float) -> dict:
    loss = law.predict(Curve("f", lr, c_steps, np.ones(len(c_steps)), w))
    return {"steps": c_steps.tolist(), "loss": loss.tolist(), "loss_lo": (loss * np.exp(-z * sigma)).tolist(),
            "loss_hi": (loss * np.exp(z * sigma)).tolist()}


def run(spec: SchedulesSpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    z = z_of(0.9)
    ds = load_dataset(_config(spec, spec.sizes[0], FITTED["cosine"], spec.seed), log=log)
    sizes, forecasts = [], {}
    for size in spec.sizes:
        fit_plan = {_name(size, k, spec.seed): (size, k, s, _config(spec, size, s, spec.seed))
                    for k, s in FITTED.items()}
        curves = _train(spec, out, fit_plan, ds, log)
        law = fit_curves(list(curves.values()), spec.law)
        sigma = float(np.hypot(law.info["rmse_relative"], CALIBRATION[spec.law]["sigma_schedule"]))
        best, candidates = best_schedule(law, spec)
        ref = next(iter(curves.values()))  # every run is evaluated at the same steps
        targets = {"wsd": WSD, "law-best": best}
        written = read_json(out / "forecast.json", "forecast") if (out / "forecast.json").exists() else {}
        if size in written:  # a rerun reads the forecast it wrote before training, never one made with hindsight
            forecasts[size] = written[size]
            best = _schedule_of(forecasts[size]["law-best"]["schedule"], _warmup(spec))
            targets["law-best"] = best
        else:
            forecasts[size] = {k: {"schedule": _spec_text(s, _warmup(spec)), **_forecast(
                law, ref.steps, _rates(spec, s), ref.warmup_steps, sigma, z)} for k, s in targets.items()}
            atomic_write_json(out / "forecast.json", {**written, "written_before_training": True, "level": 0.9,
                                                      **forecasts})
        log(f"  {size}: law fitted on cosine + constant (rmse {law.info['rmse_relative']:.3%}); best schedule "
            f"{forecasts[size]['law-best']['schedule']}; forecasts written to {out / 'forecast.json'}")
        plan = {_name(size, k, spec.seed): (size, k, s, _config(spec, size, s, spec.seed)) for k, s in targets.items()}
        plan.update({_name(size, k, seed): (size, k, s, _config(spec, size, s, seed))
                     for seed in range(spec.seed + 1, spec.seed + spec.seeds)
                     for k, s in (("cosine", FITTED["cosine"]), ("law-best", best))})
        curves.update(_train(spec, out, plan, ds, log))
        sizes.append(_score(size, spec, curves, forecasts[size], law, sigma, candidates))
    summary = {"spec": asdict(spec), "sizes": sizes, "seconds": time.perf_counter() - t0}
    figs = plot(sizes, forecasts, out)
    write_summary(out, summary)
    _report(out, summary, figs)
    return summary


def _score(size, spec, curves, fc, law, sigma, candidates) -> dict:
    rows = []
    for k, f in fc.items():
        c = curves[_name(size, k, spec.seed)]
        pred = np.array(f["loss"])[: len(c.loss)]
        rel = pred / c.loss - 1
        rows.append({"schedule": k, "spec": f["schedule"], "forecast_final": float(pred[-1]),
                     "measured_final": float(c.loss[-1]), "final_error": float(rel[-1]),
                     "final_covered": bool(np.array(f["loss_lo"])[len(c.loss) - 1] <= c.loss[-1]
                                           <= np.array(f["loss_hi"])[len(c.loss) - 1]),
                     "curve_mean_abs_error": float(np.mean(np.abs(rel)))})
    finals = {k: [curves[n].loss[-1] for n in curves if n.startswith(f"{Shape.parse(size).name}-{k}-")]
              for k in ("cosine", "constant", "wsd", "law-best")}
    gain = float(np.mean(finals["law-best"]) / np.mean(finals["cosine"]) - 1)
    std = {k: float(np.std(v, ddof=1)) if len(v) > 1 else None for k, v in finals.items()}
    return {"size": size, "law": law.params, "fit_rmse": law.info["rmse_relative"], "sigma": sigma,
            "forecasts": rows, "final_losses": finals, "law_best_vs_cosine": gain, "seed_std": std,
            "candidates": candidates,
            "curves": {n: {"steps": c.steps.tolist(), "loss": c.loss.tolist()} for n, c in curves.items()}}


def plot(sizes: list[dict], forecasts: dict, out: Path) -> list[Path]:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4), squeeze=False)
    for ax, s in zip(axes[0], sizes):
        for name, c in s["curves"].items():
            ax.plot(c["steps"], c["loss"], ".-", lw=1, label=name.split("-", 1)[1])
        for f in forecasts[s["size"]].values():
            ax.plot(f["steps"], f["loss"], "--", color="black", lw=1)
            ax.fill_between(f["steps"], f["loss_lo"], f["loss_hi"], color="grey", alpha=0.2)
        ax.set(xlabel="step", ylabel="validation loss", title=f"{s['size']}: measured (dots), forecast (dashed)")
        lo = min(min(c["loss"]) for c in s["curves"].values())
        ax.set_ylim(lo * 0.98, lo * 1.25)
        ax.legend(fontsize=6)
    return [savefig(fig, out, "schedules")]


def _report(out: Path, s: dict, figs: list[Path]) -> None:
    rows = [{"size": z["size"], **{k: r[k] for k in ("schedule", "spec", "forecast_final", "measured_final",
                                                      "final_error", "final_covered", "curve_mean_abs_error")}}
            for z in s["sizes"] for r in z["forecasts"]]
    write_report(out, "Schedules lab: forecasting unseen learning-rate schedules", [
        ("Forecasts written before training", headline(s), figs, table_html(rows))])


def headline(s: dict) -> str:
    parts = []
    for z in s["sizes"]:
        f = {r["schedule"]: r for r in z["forecasts"]}
        sd = z["seed_std"]
        std = f" (seed std: cosine {sd['cosine']:.4f}, law-best {sd['law-best']:.4f})" if sd["cosine"] else ""
        parts.append(f"{z['size']}: final-loss forecast error wsd {f['wsd']['final_error']:+.2%}, law-best "
                     f"{f['law-best']['final_error']:+.2%} ({sum(r['final_covered'] for r in z['forecasts'])}/2 "
                     f"covered); law-best ({f['law-best']['spec']}) vs cosine {z['law_best_vs_cosine']:+.2%}{std}")
    return "; ".join(parts)
