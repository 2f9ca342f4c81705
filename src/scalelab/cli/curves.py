"""`scalelab backtest --curves`: loss-curve laws fitted on three schedules, scored on six they never saw."""

from __future__ import annotations

import numpy as np

from scalelab.cli.output import save_and_print_json, table
from scalelab.errors import UserError


def cmd_backtest_curves(a) -> int:
    from scalelab.laws.backtest import map_tasks
    from scalelab.laws.curves import FORMS, mpl_curves, score_across_sizes, score_curve_law

    forms = [m.strip() for m in a.methods.split(",")] if a.methods else list(FORMS)
    for f in forms:
        if f not in FORMS:
            raise UserError(f"--methods: unknown curve law {f!r}; choose from {', '.join(FORMS)}")
    curves = mpl_curves()
    rows = map_tasks(score_curve_law, [(f, m, curves[m]) for f in forms for m in sorted(curves, key=_size)],
                     a.workers)
    for f in forms:  # across sizes: 25M and 100M's laws, each parameter's trend in N, scored at 400M
        fitted = {r["model"]: r["params"] for r in rows if r["form"] == f and r["model"] in ("25M", "100M")}
        rows += score_across_sizes(f, fitted, "400M", curves["400M"])
    summary = summarize(rows)
    res = {"data": "Multi-Power Law public curves (Luo et al. 2025): fitted on cosine_24000, constant_24000, "
                   "wsdcon_9; scored on the 6 other schedules", "summary": summary, "rows": rows}
    if save_and_print_json(res, a.out, a.json):
        return 0
    pct = lambda v: f"{v:.2%}"  # noqa: E731
    table("curve back-test: unseen schedules of each size, and 400M from the 25M and 100M laws (errors relative "
          "to the loss)",
          ["law", "size", "fitted: mean |err|", "unseen: mean |err|", "unseen: mean |final err|", "worst final err"],
          [(r["form"], r["model"], pct(r["fitted_mean_abs_error"]) if r["fitted_mean_abs_error"] is not None else "-",
            pct(r["unseen_mean_abs_error"]),
            pct(r["unseen_mean_abs_final_error"]), f"{r['worst_final_error']:+.2%}") for r in summary])
    if a.by_split:
        table("per schedule", ["law", "size", "schedule", "split", "mean |err|", "final err"],
              [(r["form"], r["model"], r["schedule"], r["split"], pct(r["mean_abs_error"]), f"{r['final_error']:+.2%}")
               for r in rows])
    if a.out:
        print(f"wrote {a.out}")
    return 0


def _size(model: str) -> float:
    return float(model.rstrip("M"))


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for (form, model) in dict.fromkeys((r["form"], r["model"]) for r in rows):
        g = [r for r in rows if r["form"] == form and r["model"] == model]
        fit, unseen = [r for r in g if r["split"] == "fitted"], [r for r in g if r["split"] == "unseen"]
        finals = [r["final_error"] for r in unseen]
        out.append({"form": form, "model": model,
                    "fitted_mean_abs_error": float(np.mean([r["mean_abs_error"] for r in fit])) if fit else None,
                    "unseen_mean_abs_error": float(np.mean([r["mean_abs_error"] for r in unseen])),
                    "unseen_mean_abs_final_error": float(np.mean(np.abs(finals))),
                    "worst_final_error": float(max(finals, key=abs))})
    return out
