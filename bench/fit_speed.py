"""Approach-3 fitting speed on the 240 Chinchilla points (Besiroglu et al. 2024 digitisation).

Times scalelab's fit (full Chinchilla start grid screened, L-BFGS from the best starts, then 1,000
bootstrap resamples), the exactly-as-published variant (L-BFGS from all 4,500 starts), and, when it
is installed (`pip install chinchilla`), the `chinchilla` package from PyPI on the same data, grid
and objective (log-space Huber, delta = 1e-3), and reports the ratio.

    python bench/fit_speed.py [--json bench/results/fit_speed.json] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

from scalelab.laws.fitting import fit_approach3
from scalelab.laws.table import load_table


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip-all-starts", action="store_true")
    a = ap.parse_args(argv)
    src = resources.files("scalelab") / "examples" / "chinchilla_besiroglu2024.csv"
    table = load_table(str(src), drop_highest_loss=5)
    rows = {}
    law, t = timed(lambda: fit_approach3(table))
    rows["scalelab_fit"] = {"seconds": t, "params": law.params}
    law_b, t = timed(lambda: fit_approach3(table, bootstrap=a.bootstrap))
    rows["scalelab_fit_plus_bootstrap"] = {"seconds": t, "bootstrap": a.bootstrap, "ci": law_b.ci()}
    if not a.skip_all_starts:
        law_all, t = timed(lambda: fit_approach3(table, top_starts=None))
        rows["scalelab_all_starts"] = {"seconds": t, "params": law_all.params,
                                       "same_optimum": bool(abs(law_all.info["objective"] - law.info["objective"])
                                                            < 1e-12)}
    try:
        import chinchilla
        from chinchilla._metrics import log_huber
    except ImportError:
        rows["chinchilla_package"] = {"installed": False}
    else:
        with tempfile.TemporaryDirectory() as d:
            df = table.df[["C", "N", "D", "loss"]]
            df.to_csv(Path(d) / "df.csv", index=False)
            grid = {"e": tuple(np.arange(-1, 1.5, 0.5)), "a": tuple(np.arange(0, 30, 5.0)),
                    "b": tuple(np.arange(0, 30, 5.0)), "alpha": tuple(np.arange(0, 2.5, 0.5)),
                    "beta": tuple(np.arange(0, 2.5, 0.5))}
            cc = chinchilla.Chinchilla(d, param_grid=grid, loss_fn=lambda y, p: log_huber(y, p, delta=1e-3),
                                       log_level=logging.ERROR)
            _, t = timed(lambda: cc.fit(parallel=False))
            params = {k: float(getattr(cc, k)) for k in ("E", "A", "B", "alpha", "beta")}
        rows["chinchilla_package"] = {"installed": True, "version": getattr(chinchilla, "__version__", "0.2.0"),
                                      "seconds": t, "params": params,
                                      "note": "BFGS from all 4,500 starts, one fit, no bootstrap"}
        rows["ratio_package_over_scalelab_fit"] = t / rows["scalelab_fit"]["seconds"]
        if "scalelab_all_starts" in rows:
            rows["ratio_package_over_scalelab_all_starts"] = t / rows["scalelab_all_starts"]["seconds"]
    for k, v in rows.items():
        if isinstance(v, dict) and "seconds" in v:
            p = v.get("params")
            ps = ", ".join(f"{n}={float(x):.4g}" for n, x in p.items()) if p else ""
            print(f"{k:<32}{v['seconds']:>8.2f} s  {ps}")
        elif not isinstance(v, dict):
            print(f"{k:<32}{v:>8.1f}x")
        else:
            print(f"{k:<32} not installed (pip install chinchilla to compare)")
    if a.json:
        from scalelab.io import to_plain

        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(to_plain(rows), indent=2, default=float))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
