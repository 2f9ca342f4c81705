"""The back-test suite: its protocol never lets a held-out point into a fit, methods recover known
laws, scores are right on a law that is known, and the command answers bad input in one line."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from scalelab.errors import UserError
from scalelab.laws.backtest import DATASETS, Split, finals, load_backtest, score, splits
from scalelab.laws.law import FittedLaw
from scalelab.laws.methods import Method
from scalelab.laws.synthetic import isoflop_table
from scalelab.laws.table import load_table

TRUTH = FittedLaw(form="chinchilla", params={"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.37})


@pytest.mark.parametrize("name", list(DATASETS))
def test_no_held_out_point_ever_enters_a_fit(name, public):
    if DATASETS[name].sources:
        public(*DATASETS[name].sources)
    d = load_backtest(name)
    assert len(d) and (d[["N", "D", "loss"]] > 0).all().all()
    ss = splits(name)
    assert ss, f"{name}: no cut-off"
    for s in ss:
        held = set(s.test["run"])
        assert held.isdisjoint(set(s.train["run"]))  # no held-out run contributes any point
        assert s.train["C"].max() <= s.cut_flops < s.test["C"].min()
        assert s.ratio >= 1 and len(s.test) == len(held)
        assert set(s.test["run"]) == set(finals(d)[finals(d)["C"] > s.cut_flops]["run"])  # all of them, finals


def test_methods_recover_a_known_law():
    table = load_table(isoflop_table(TRUTH, np.geomspace(1e18, 1e21, 5), 7, noise=0.002, seed=0))
    law = Method("chinchilla", bootstrap=0).fit(table)
    for k in ("alpha", "beta"):
        assert law.params[k] == pytest.approx(TRUTH.params[k], rel=0.05)
    assert law.params["E"] == pytest.approx(TRUTH.params["E"], rel=0.02)
    with pytest.raises(UserError, match="cannot be fitted"):
        Method("x", form="data_constrained").fit(table)  # predict-only form: refused before any work


def test_score_on_a_known_law():
    """Fitted on exact points of a known law, every held-out prediction is right."""
    df = isoflop_table(TRUTH, np.geomspace(1e18, 1e22, 5), 7, noise=0.0, seed=0)
    df["C"] = 6 * df["N"] * df["D"]
    cut = 2e21
    split = Split("synthetic", cut, df[df["C"] <= cut].reset_index(drop=True),
                  df[df["C"] > cut].reset_index(drop=True), float(df["C"].max() / df[df["C"] <= cut]["C"].max()))
    rows = score(Method("chinchilla", bootstrap=20), split)
    assert len(rows) == 7 and all(r["ratio"] > 1 for r in rows)
    assert max(abs(r["rel_error"]) for r in rows) < 1e-3


# slow-marked to keep `make test` under 10 minutes with its installs; `make test-all` runs it
@pytest.mark.slow
def test_backtest_command(tmp_path):
    out = tmp_path / "bt.json"
    page = tmp_path / "bt.html"
    r = run_cli("backtest", "--datasets", "scalelab-demo", "--methods", "chinchilla,compute", "--workers", "1",
                "--json", "--out", out, "--html", page)
    assert r.returncode == 0, r.stderr
    text = page.read_text()
    assert all(f'id="fig-{k}"' in text for k in ("error_vs_ratio", "by_dataset", "coverage")) and "compute" in text
    res = json.loads(r.stdout)
    assert {row["method"] for row in res["by_split"]} == {"chinchilla", "compute"}
    points = pd.DataFrame(json.loads(out.read_text())["points"])
    assert (points["dataset"] == "scalelab-demo").all() and points["rel_error"].abs().max() < 0.5
    for args, msg in ((["--datasets", "nope"], "--datasets: unknown dataset"),
                      (["--methods", "nope"], "--methods"), (["--level", "1.5"], "--level must be in")):
        r = run_cli("backtest", *args)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
