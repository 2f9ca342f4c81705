"""`scalelab backtest --allocation`: how well each method places compute (N*, D*) on held-out budgets."""

from __future__ import annotations

from scalelab.cli.output import save_and_print_json, table
from scalelab.errors import UserError


def cmd_backtest_allocation(a) -> int:
    from scalelab.laws.alloc_backtest import FACTOR_TOLERANCE, run_alloc_backtest
    from scalelab.laws.alloc_methods import ALLOCATION_METHODS, DEFAULT_ALLOCATION, get_allocation_method

    if a.datasets:
        raise UserError("--datasets is for the loss back-test; --allocation reads the public IsoFLOP sweeps "
                        "and --synthetic N ladders")
    methods = [get_allocation_method(m.strip()) for m in a.methods.split(",")] if a.methods \
        else list(ALLOCATION_METHODS.values())
    res = run_alloc_backtest(methods, n_synthetic=a.synthetic, level=a.level, workers=a.workers)
    res["default"] = DEFAULT_ALLOCATION
    if save_and_print_json(res, a.out, a.json):
        return 0
    dex = lambda v: f"{v:.3f}"  # noqa: E731
    pct = lambda v: f"{v:.0%}"  # noqa: E731
    table(f"allocation back-test: N* at held-out budgets ({a.level:.0%} intervals; D* = C/6N* errs as much, "
          "tokens per parameter twice)",
          ["method", "data", "ladders", "points", "median |log10 err|", "worst", f"within {FACTOR_TOLERANCE}x",
           "coverage (bootstrap)", "coverage (calibrated)", "median ratio"],
          [(r["method"] + (" (default)" if r["method"] == DEFAULT_ALLOCATION else ""), r["data"], r["ladders"],
            r["points"], dex(r["median_abs_log10_error"]), dex(r["worst_abs_log10_error"]), pct(r["within_factor"]),
            pct(r["coverage_bootstrap"]), pct(r["coverage"]), f"{r['median_ratio']:.0f}x") for r in res["summary"]])
    print("calibrated: ln N* widened by sigma per decade of extrapolation, learned on the tuned-on rows: " +
          ", ".join(f"{m} {s:.3f}" for m, s in res["sigma"].items()))
    if res["failed"]:
        print(f"{len(res['failed'])} fits failed: " + "; ".join(f"{p['dataset']} {p['method']}: {p['error']}"
                                                                for p in res["failed"][:3]))
    if a.out:
        print(f"wrote {a.out}")
    return 0
