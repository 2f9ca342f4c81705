"""Forecast lab: predict a bigger model's exact match before training it, then train it and compare.

A ladder of small models is trained on a task mix of graded difficulty (1-, 2- and 3-digit sums: the
smallest models solve the first, the largest here only begin the last), every size on the same
tokens. Each is evaluated on held-out problems (exact match, and the answer's NLL per token). Per
task, `laws/tasks.py` fits the two steps (answer NLL in (N, D); exact match from the answer NLL by a
sigmoid) and forecasts the target model, `target` (several times the largest fitted one). The forecast
is written to OUT/forecast.json with the time *before* the target trains; then it trains, and the lab
reports, per task, whether its exact match fell inside the forecast's interval, the point error and
the interval's width: whether the jump was predicted.
"""

from __future__ import annotations

import datetime
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.data.tasks import TaskMix, parse_task
from scalelab.errors import UserError
from scalelab.evaluate.harness import evaluate_task
from scalelab.io import atomic_write_json, read_json
from scalelab.labs.common import (
    Shape,
    begin,
    model_dict,
    pyplot,
    run_config,
    savefig,
    task_dataset,
    train_or_load,
    write_report,
    write_summary,
)
from scalelab.labs.progress import LabProgress
from scalelab.laws.tasks import fit_tasks, sigmoid
from scalelab.report.page import table_html
from scalelab.train.rundir import RunDir

METRIC, VIA = "exact_match", "answer_nll_per_token"


@dataclass(frozen=True)
class ForecastSpec:
    tasks: tuple[str, ...] = ("addition:digits=1,format=plain", "addition:digits=2,format=plain",
                              "addition:digits=3,format=plain")
    sizes: tuple[str, ...] = ("16x1", "24x1", "32x1", "32x2", "48x2", "64x2")  # the fitted ladder
    target: str = "128x2"  # the held-out model (3.9x the largest fitted), trained after the forecast is written
    tokens: int = 3_000_000  # training tokens per model (the same for every size)
    seeds: tuple[int, ...] = (0, 1)  # every size, the target included, trained once per seed
    lr: float = 3e-3
    batch_size: int = 32
    seq_len: int = 64
    test_size: int = 300
    train_chars: int = 4_000_000
    method: str = "chinchilla"  # step 1's loss method (the task back-test's default)
    level: float = 0.9

    def validate(self) -> ForecastSpec:
        for t in self.tasks:
            parse_task(t)
        shapes = [Shape.parse(s) for s in (*self.sizes, self.target)]
        if len(self.sizes) < 6:
            raise UserError("sizes needs at least 6 model sizes (step 1 fits 5 parameters)", arg="sizes")
        n = [s.d_model ** 2 * s.n_layers for s in shapes]  # the blocks' parameters, up to a constant
        if n[-1] <= max(n[:-1]):
            raise UserError(f"target {self.target} must be larger than every fitted size", arg="target")
        if not 0 < self.level < 1:
            raise UserError(f"level must be in (0, 1), got {self.level}", arg="level")
        if not self.seeds:
            raise UserError("seeds needs at least one seed", arg="seeds")
        if self.tokens < self.batch_size * self.seq_len * 10:
            raise UserError(f"tokens={self.tokens} is under 10 steps; raise it", arg="tokens")
        return self


QUICK = dict(tasks=("addition:digits=1,format=plain", "addition:digits=2,format=plain"),
             sizes=("8x1", "16x1", "24x1", "32x1", "40x1", "48x1"), target="64x2", tokens=150_000, seeds=(0,),
             batch_size=8, test_size=60, train_chars=400_000)


def run(spec: ForecastSpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    mix = TaskMix(tasks=spec.tasks, test_size=spec.test_size)
    ds = task_dataset(mix, out, spec.train_chars)
    runs = {f"{Shape.parse(size).name}-s{seed}": _config(spec, size, seed)
            for size in (*spec.sizes, spec.target) for seed in spec.seeds}
    with LabProgress(out, runs, "forecast lab"):
        ladder = pd.DataFrame([r for size in spec.sizes for seed in spec.seeds
                               for r in _train_and_eval(spec, size, seed, mix, ds, out, log)])
        forecast = _forecast(spec, ladder, out, log)
        target = pd.DataFrame([r for seed in spec.seeds
                               for r in _train_and_eval(spec, spec.target, seed, mix, ds, out, log)])
    summary = {"spec": asdict(spec), "forecast_written_at": forecast["written_at"],
               "tasks": _compare(forecast, target), "ladder": ladder.to_dict("records"),
               "target_points": target.to_dict("records"), "seconds": time.perf_counter() - t0}
    figures = plot(summary, forecast, out)
    write_summary(out, summary)
    _report(out, summary, figures)
    return summary


def _config(spec: ForecastSpec, size: str, seed: int):
    return run_config(model_dict(Shape.parse(size)), spec.tokens, spec.lr, spec.batch_size, spec.seq_len, seed)


def _train_and_eval(spec: ForecastSpec, size: str, seed: int, mix: TaskMix, ds, out: Path, log) -> list[dict]:
    shape = Shape.parse(size)
    cfg = _config(spec, size, seed)
    model, _ = train_or_load(cfg, RunDir.under(out, f"{shape.name}-s{seed}"), ds, log)
    tests = mix.test_sets()
    rows = []
    for task in mix.parsed():
        r = evaluate_task(model, task, tests[task.spec])
        rows.append({"task": task.spec, "size": size, "seed": seed, "N": cfg.model.num_params_total,
                     "D": cfg.total_steps * cfg.train.tokens_per_step, METRIC: r[METRIC], VIA: r[VIA]})
    log(f"  {shape.name} seed {seed}: " + ", ".join(
        f"{r['task'].split(':')[1]} EM {r[METRIC]:.2f} NLL {r[VIA]:.3f}" for r in rows))
    return rows


def _forecast(spec: ForecastSpec, ladder: pd.DataFrame, out: Path, log) -> dict:
    """Fit the ladder and forecast the target; written once, before the target trains (a rerun of a
    finished lab reads it back rather than forecasting with hindsight)."""
    path = out / "forecast.json"
    if path.exists():
        return read_json(path, "forecast")
    cfg = _config(spec, spec.target, spec.seeds[0])
    N, D = cfg.model.num_params_total, cfg.total_steps * cfg.train.tokens_per_step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fc = fit_tasks(ladder, METRIC, VIA, method=spec.method)
        pred = fc.predict(N, D, spec.level)
    res = {"written_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "target": {"size": spec.target, "N": N, "D": D, "ratio": N / float(ladder["N"].max())},
           "level": spec.level, "fit": {t: law.to_dict() for t, law in fc.tasks.items()},
           "tasks": {t: {k: {kk: float(np.atleast_1d(v)[0]) if kk != "level" else v for kk, v in e.items()}
                         for k, e in p.items()} for t, p in pred.items()}}
    atomic_write_json(path, res)
    log("forecast written before training the target: " + ", ".join(
        f"{t.split(':')[1]} EM {p[METRIC]['value']:.2f} [{p[METRIC]['lo']:.2f}, {p[METRIC]['hi']:.2f}]"
        for t, p in res["tasks"].items()))
    return res


def _compare(forecast: dict, target: pd.DataFrame) -> dict:
    """Per task: the forecast against the target's exact match, each seed's and their mean (a seed is
    one model a user could have trained; the interval is for one such measurement)."""
    out = {}
    for task, p in forecast["tasks"].items():
        rows = target[target["task"] == task]
        em, nll, actual = p[METRIC], p[VIA], rows[METRIC].to_numpy(float)
        out[task] = {"forecast": em["value"], "lo": em["lo"], "hi": em["hi"], "actual": float(actual.mean()),
                     "actual_by_seed": actual.tolist(),
                     "inside_by_seed": [bool(em["lo"] <= a <= em["hi"]) for a in actual],
                     "inside": bool(em["lo"] <= actual.mean() <= em["hi"]),
                     "error_points": 100 * abs(em["value"] - float(actual.mean())),
                     "width_points": 100 * (em["hi"] - em["lo"]),
                     "nll_forecast": nll["value"], "nll_lo": nll["lo"], "nll_hi": nll["hi"],
                     "nll_actual": float(rows[VIA].mean())}
    return out


def plot(summary: dict, forecast: dict, out: Path) -> list[Path]:
    """Per task, the two steps: answer NLL against parameters (ladder, forecast with its interval, the
    target as trained) and exact match against answer NLL (the fitted sigmoid)."""
    plt = pyplot()
    ladder, target, paths = pd.DataFrame(summary["ladder"]), pd.DataFrame(summary["target_points"]), []
    n_t = forecast["target"]["N"]
    for ti, (task, c) in enumerate(summary["tasks"].items()):
        g, t = ladder[ladder["task"] == task], target[target["task"] == task]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        a1.plot(g["N"], g[VIA], "o", label="ladder (fitted)")
        err = [[max(c["nll_forecast"] - c["nll_lo"], 0)], [max(c["nll_hi"] - c["nll_forecast"], 0)]]
        a1.errorbar([n_t], [c["nll_forecast"]], yerr=err, fmt="s", capsize=4, color="gray", label="forecast")
        a1.plot(t["N"], t[VIA], "*", ms=12, color="C3", label="target (each seed), trained after")
        a1.set(xscale="log", xlabel="parameters", ylabel="answer NLL per token (nats)", title="step 1")
        a1.legend(fontsize=8)
        theta = forecast["fit"][task]["theta"]
        xs = np.linspace(0, max(g[VIA].max(), c["nll_actual"]) * 1.05, 200)
        a2.plot(g[VIA], g[METRIC], "o")
        a2.plot(xs, sigmoid(theta, xs), "-", color="gray", lw=1)
        err = [[max(c["forecast"] - c["lo"], 0)], [max(c["hi"] - c["forecast"], 0)]]
        a2.errorbar([c["nll_forecast"]], [c["forecast"]], yerr=err, fmt="s", capsize=4, color="gray")
        a2.plot(t[VIA], t[METRIC], "*", ms=12, color="C3")
        a2.set(xlabel="answer NLL per token (nats)", ylabel="exact match", title="step 2", ylim=(-0.03, 1.03))
        fig.suptitle(f"{task}: forecast {c['forecast']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}], measured "
                     + ", ".join(f"{a:.2f}" for a in c["actual_by_seed"]), fontsize=11)
        fig.tight_layout()
        paths.append(savefig(fig, out, f"forecast_{ti}"))
    return paths


def _report(out: Path, summary: dict, figures: list[Path]) -> None:
    rows = [{"task": t, "forecast": c["forecast"], "interval": f"[{c['lo']:.3f}, {c['hi']:.3f}]",
             "measured": c["actual"], "inside": c["inside"], "error (points)": c["error_points"]}
            for t, c in summary["tasks"].items()]
    text = (f"The forecast was written at {summary['forecast_written_at']} (UTC), before the target "
            f"{summary['spec']['target']} was trained; {sum(r['inside'] for r in rows)} of {len(rows)} "
            "measured exact matches fell inside its interval.")
    write_report(out, "Forecast: exact match of a bigger model, predicted before training it",
                 [("forecast vs measured", text, figures, table_html(rows))])


def headline(s: dict) -> str:
    return "\n".join(f"{t}: forecast EM {c['forecast']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}], measured "
                     + ", ".join(f"{a:.3f}" for a in c["actual_by_seed"])
                     + f" ({sum(c['inside_by_seed'])}/{len(c['inside_by_seed'])} seeds inside; mean's error "
                     f"{c['error_points']:.1f} points)" for t, c in s["tasks"].items())
