"""Allocation (N*, D*): the methods recover a known law's optimum, the back-test never fits a held-out
budget, its coverage check and calibration do what they say, and `fit` -> `predict --compute` states
the allocation default's calibrated interval."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from scalelab.laws import alloc_backtest as ab
from scalelab.laws.alloc_methods import ALLOCATION_METHODS, DEFAULT_ALLOCATION, allocation_law, attach_allocation
from scalelab.laws.law import FittedLaw
from scalelab.laws.methods import METHODS
from scalelab.laws.synthetic import isoflop_table
from scalelab.laws.table import load_table

TRUTH = FittedLaw("chinchilla", {"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.30, "beta": 0.38})  # asymmetric


@pytest.mark.parametrize("name", ["approach2", "approach2-valley", "chinchilla"])
def test_methods_recover_a_known_optimum_100x_past_the_ladder(name):
    table = load_table(isoflop_table(TRUTH, np.geomspace(1e18, 1e20, 5), 9, span=10.0, noise=0.0))
    law = ALLOCATION_METHODS[name].fit(table)
    r = law.allocate_with_interval(np.array([1e22]))
    true_n = TRUTH.allocate(1e22)["N_opt"][0]
    # approach 2's parabola is biased by a grid a decade wide on an asymmetric surface (Open-Athena 2026);
    # within the valley it is less so; approach 3 with the right form is exact
    tol = {"approach2": 0.06, "approach2-valley": 0.03, "chinchilla": 0.002}[name]
    assert abs(np.log10(r["N_opt"][0] / true_n)) < tol
    assert r["N_opt_lo"][0] <= r["N_opt"][0] <= r["N_opt_hi"][0]
    assert r["N_opt"][0] * r["D_opt"][0] * 6 == pytest.approx(1e22, rel=1e-6)


def test_the_valley_window_removes_approach_2s_grid_width_bias():
    """Noise-free, an asymmetric surface sampled 2 decades wide: the parabola through all points misses
    N* by more than the one through the valley (the bias Open-Athena 2026 describes)."""
    table = load_table(isoflop_table(TRUTH, np.geomspace(1e18, 1e20, 5), 13, span=100.0, noise=0.0))
    true_n = TRUTH.allocate(1e22)["N_opt"][0]
    err = {n: abs(np.log10(ALLOCATION_METHODS[n].fit(table).allocate(1e22)["N_opt"][0] / true_n))
           for n in ("approach2", "approach2-valley")}
    assert err["approach2-valley"] < err["approach2"] / 2, err


def test_synthetic_truths_are_exact_and_seeded():
    a, b = ab.synthetic_splits(4), ab.synthetic_splits(4)
    assert all(x.train.equals(y.train) for x, y in zip(a, b))
    law, design = ab.synthetic_truth(0)
    assert a[0].targets["N_true"].tolist() == law.allocate(np.array(ab.SYNTHETIC_TARGETS))["N_opt"].tolist()
    assert {s.untouched for s in ab.synthetic_splits(ab.SYNTHETIC_TUNED + 1)} == {False, True}


def test_a_budget_optimum_is_the_parabolas_vertex_with_its_error():
    n = np.geomspace(1e8, 1e10, 9)
    g = pd.DataFrame({"N": n, "loss": 3.0 + 0.2 * (np.log(n) - np.log(1e9)) ** 2})
    n_opt, sd = ab.budget_optimum(g)
    assert n_opt == pytest.approx(1e9, rel=1e-6) and sd < 1e-6
    assert ab.budget_optimum(g[g["N"] < 5e8]) is None  # the valley is not bracketed: not scored


def test_no_held_out_budget_enters_a_fit(public):
    public("isoflops-open-athena")
    splits = ab.public_splits()
    assert {s.untouched for s in splits} == {False, True}
    for s in splits:
        assert s.train["budget"].max() < s.targets["C"].min()
        assert not s.dataset.startswith("llama_3")  # the held-back Llama 3 rows never reach the table


def test_coverage_counts_the_truths_own_error():
    rows = pd.DataFrame({"N_pred": [1.0, 1.0], "boot_lo": [0.9, 0.9], "boot_hi": [1.1, 1.1], "ratio": [0.0, 0.0],
                         "N_true": [1.3, 1.3], "sd_ln": [0.0, 0.2]})
    assert ab.covered(rows, 0.0).tolist() == [False, True]  # ln 1.3 = 0.26 < sqrt(0.095^2 + (1.645 * 0.2)^2)
    assert ab.covered(rows.iloc[:1], 0.2).tolist() == [False]  # no extrapolation: sigma adds nothing
    assert ab.covered(rows.iloc[:1].assign(ratio=100.0), 0.2).tolist() == [True]


def test_fit_keeps_the_allocation_default_and_predict_states_its_calibrated_interval(tmp_path):
    csv = tmp_path / "ladder.csv"
    isoflop_table(TRUTH, np.geomspace(1e18, 1e20, 5), 7, noise=0.005, seed=3).to_csv(csv, index=False)
    out = tmp_path / "fit.json"
    r = run_cli("fit", csv, "--out", out, "--bootstrap", "20")
    assert r.returncode == 0, r.stderr
    assert f"allocation method {DEFAULT_ALLOCATION}" in r.stdout
    law = FittedLaw.load(out)
    assert law.info["method"] == "ensemble" and allocation_law(law).info["allocation_method"] == DEFAULT_ALLOCATION
    p = json.loads(run_cli("predict", out, "--compute", 1e22, "--json").stdout)
    true_n = TRUTH.allocate(1e22)["N_opt"][0]
    assert p["N_opt_lo"] < true_n < p["N_opt_hi"] and p["extrapolation_ratio"] == pytest.approx(100)
    assert p["allocation_method"] == DEFAULT_ALLOCATION and "calibrated on the allocation" in p["allocation_interval"]
    assert "calibrated on the loss" in p["loss_interval"] and p["loss_lo"] < p["loss"] < p["loss_hi"]
    assert p["D_opt_lo"] == pytest.approx(1e22 / 6 / p["N_opt_hi"])


def test_attach_allocation_reuses_a_fit_of_the_same_method():
    table = load_table(isoflop_table(TRUTH, np.geomspace(1e18, 1e20, 4), 6, noise=0.0))
    law = METHODS["chinchilla"].fit(table)
    assert attach_allocation(law, table) is law and "allocation" not in law.info
    assert law.info["allocation_calibration"]["sigma_per_decade"] == ALLOCATION_METHODS["chinchilla"].sigma_per_decade


def test_allocation_backtest_command_and_its_bad_input(tmp_path):
    r = run_cli("backtest", "--allocation", "--methods", "approach2,approach2-valley", "--synthetic", "3",
                "--workers", "1", "--json", "--out", tmp_path / "ab.json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    parts = {(s["method"], s["data"]) for s in res["summary"]}
    assert ("approach2", "synthetic, tuned-on") in parts and ("approach2", "public, untouched") in parts
    rows = json.loads((tmp_path / "ab.json").read_text())["rows"]
    synth = [x for x in rows if x["family"] == "synthetic" and x["method"] == "approach2"]
    assert len(synth) == 6 and all(abs(x["log10_error"]) < 0.3 for x in synth)
    for args, msg in ((["--methods", "nope"], "unknown allocation method"), (["--synthetic", "-1"], "--synthetic"),
                      (["--datasets", "opt"], "--datasets is for the loss back-test")):
        r = run_cli("backtest", "--allocation", *args)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
