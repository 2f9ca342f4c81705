"""Learn the extrapolation term of the forecast interval (laws/intervals.py eq. 1) from a back-test's
held-out points: sigma_dec on the tuned-on datasets, its coverage leave-one-dataset-out, and on the
untouched datasets (never used to learn it).

    .venv/bin/scalelab backtest --methods ensemble --out /tmp/bt.json
    .venv/bin/python bench/calibrate_intervals.py /tmp/bt.json --method ensemble [--out bench/results/calibration.json]
"""

from __future__ import annotations

import argparse
import json

from scalelab.io import atomic_write_json, read_json
from scalelab.laws.intervals import calibrate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("backtest_json")
    ap.add_argument("--method", default="ensemble")
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rows = [r for r in read_json(a.backtest_json)["points"] if r.get("method") == a.method and "error" not in r]
    out = {"method": a.method, "source": a.backtest_json, **calibrate(rows, a.level)}
    print(json.dumps(out, indent=2))
    if a.out:
        atomic_write_json(a.out, out)


if __name__ == "__main__":
    main()
