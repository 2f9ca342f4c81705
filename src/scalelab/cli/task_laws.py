"""`scalelab fit --metric`, `scalelab predict` on a task-forecast file, `scalelab backtest --tasks`."""

from __future__ import annotations

import warnings

import numpy as np

from scalelab.cli.args import method_names
from scalelab.cli.output import print_json, table
from scalelab.errors import UserError


def read_task_table(a):
    """The table to fit: a CSV/Parquet path or ``--example pythia-tasks``."""
    from scalelab.laws.table import read_frame

    if a.example == "pythia-tasks":
        from scalelab.laws.task_backtest import pythia_tasks

        return pythia_tasks()
    if a.example:
        raise UserError("--example with --metric must be pythia-tasks", arg="example")
    if not a.table:
        raise UserError("give a TABLE.csv with a metric column to fit, or --example pythia-tasks")
    return read_frame(a.table)


def cmd_fit_tasks(a) -> int:
    from scalelab.laws.task_backtest import DEFAULT_TASK_METHOD, TASK_METHODS
    from scalelab.laws.tasks import fit_tasks

    if a.metric is None:
        raise UserError("--via needs --metric (the column to forecast)", arg="via")
    method = a.method or TASK_METHODS[DEFAULT_TASK_METHOD].law_method
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fc = fit_tasks(read_task_table(a), a.metric, a.via, method=method, bootstrap=a.bootstrap, seed=a.seed)
    if a.out:
        fc.save(a.out)
    rows = {name: _summary(law) for name, law in fc.tasks.items()}
    if a.json:
        print_json({"metric": fc.metric, "via": fc.via, "method": method, "tasks": rows})
        return 0
    how = f"via {fc.via}: step 1 {method}, step 2 acc = b + (1-b)/(1+exp(k(x-x0)))" if fc.via \
        else f"direct: -ln({fc.metric}) fitted as a loss with {method}"
    table(f"task forecasts of {fc.metric} ({how})", ["task", "runs", "b (floor)", "k", "x0", "scatter (points)"],
          [(n, r["runs"], *(f"{r[k]:.3g}" if k in r else "" for k in ("b", "k", "x0")),
            f"{100 * r['resid_sd']:.2f}" if fc.via else "") for n, r in rows.items()], right=())
    if a.out:
        print(f"wrote {a.out}")
    return 0


def _summary(law) -> dict:
    out = {"runs": law.n_points, "resid_sd": law.resid_sd, "step1": law.step1.summary()}
    if law.theta:
        out.update(b=law.theta[0], k=float(np.exp(law.theta[1])), x0=law.theta[2])
    return out


def cmd_predict_tasks(a) -> int:
    from scalelab.laws.tasks import TaskForecast

    if a.compute is not None or a.unique_tokens is not None:
        raise UserError("a task forecast takes --params N and --tokens D", arg="compute")
    if a.params is None or a.tokens is None:
        raise UserError("give --params N and --tokens D")
    fc = TaskForecast.load(a.law)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = fc.predict(a.params, a.tokens, a.level)
    res = {t: {k: {kk: float(v[0]) if isinstance(v, np.ndarray) else v for kk, v in e.items()}
               for k, e in p.items()} for t, p in pred.items()}
    if a.json:
        one = len(res) == 1 and next(iter(res)) == fc.metric
        print_json({"N": a.params, "D": a.tokens, **(next(iter(res.values())) if one else {"tasks": res})})
        return 0
    iv = lambda e: f"[{e['lo']:.3f}, {e['hi']:.3f}]" if "lo" in e else ""  # noqa: E731
    cols = ["task", fc.metric, f"{a.level:.0%} interval"] + ([fc.via, "interval"] if fc.via else [])
    table(f"{a.law}: N = {a.params:.3g}, D = {a.tokens:.3g}", cols,
          [(t, f"{p[fc.metric]['value']:.3f}", iv(p[fc.metric]),
            *((f"{p[fc.via]['value']:.4g}", iv(p[fc.via])) if fc.via else ())) for t, p in res.items()], right=())
    return 0


def cmd_backtest_tasks(a) -> int:
    from scalelab.laws.task_backtest import TASK_METHODS, run_task_backtest, summarize

    methods = method_names(a.methods, TASK_METHODS, "task method")
    fits: dict = {}
    rows = run_task_backtest(methods, level=a.level, fits=fits)
    summ = summarize(rows)
    res = {"summary": summ.reset_index().to_dict("records"),
           "by_task": rows.groupby(["method", "task"])["abs_err_points"].mean().reset_index().to_dict("records"),
           "points": rows.to_dict("records"), "level": a.level,
           "data": "Pythia 70M-1.4B fitted, 2.8B/6.9B/12B (standard and deduped) held out; 8 zero-shot tasks"}
    if a.out:
        from scalelab.io import atomic_write_json

        atomic_write_json(a.out, res)
    if a.html:
        from scalelab.laws.task_backtest import DEFAULT_TASK_METHOD, fit_method, task_curves
        from scalelab.report.task_backtest import write_task_backtest_page

        fc = fits.get(DEFAULT_TASK_METHOD) or fit_method(DEFAULT_TASK_METHOD)
        write_task_backtest_page(res, task_curves(fc, DEFAULT_TASK_METHOD, a.level), a.html)
    if a.json:
        print_json({k: v for k, v in res.items() if k != "points"})
        return 0
    tasks = sorted(rows["task"].unique())
    by = rows.groupby(["method", "task"])["abs_err_points"].mean()
    table("task back-test: mean |error| in accuracy points by task (Pythia 2.8B-12B from 70M-1.4B)",
          ["method", *tasks], [(m, *(f"{by[(m, t)]:.1f}" for t in tasks)) for m in summ.index])
    table(f"task back-test summary ({len(rows) // len(methods)} held-out accuracies, {a.level:.0%} intervals, "
          f"{rows['ratio'].min():.1f}x-{rows['ratio'].max():.1f}x the largest fitted model)",
          ["method", "mean |err|", "median", "worst", "coverage", "median width"],
          [(m, f"{r.mean_abs_err_points:.2f}", f"{r.median_abs_err_points:.2f}", f"{r.worst_abs_err_points:.1f}",
            f"{r.coverage:.1%}", f"{r.median_width_points:.1f}") for m, r in summ.iterrows()])
    for path in (a.out, a.html):
        if path:
            print(f"wrote {path}")
    return 0
