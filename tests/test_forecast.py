"""Forecasts users act on: the back-tested default method, calibrated intervals, `predict --json`,
and ladder design (`ladder suggest`)."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from scalelab.laws.design import candidate_grid, suggest
from scalelab.laws.intervals import coverage, fit_sigma, widen
from scalelab.laws.law import FittedLaw
from scalelab.laws.methods import DEFAULT_METHOD, METHODS, Method
from scalelab.laws.synthetic import isoflop_table
from scalelab.laws.table import load_table

TRUTH = FittedLaw(form="chinchilla", params={"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.37})
BUDGETS = np.geomspace(1e18, 1e20, 4)


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory):
    p = tmp_path_factory.mktemp("fc") / "runs.csv"
    isoflop_table(TRUTH, BUDGETS, 6, noise=0.002, seed=1).to_csv(p, index=False)
    return p


@pytest.fixture(scope="module")
def default_fit(synthetic_csv, tmp_path_factory):
    """`scalelab fit TABLE --out` with no method flags (20 resamples)."""
    out = tmp_path_factory.mktemp("fit") / "fit.json"
    r = run_cli("fit", synthetic_csv, "--bootstrap", "20", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def test_sample_weights_reach_the_objective():
    """A zero weight removes a point: the fit equals the fit without it; a gross outlier at weight 1 moves it."""
    df = isoflop_table(TRUTH, BUDGETS, 6, noise=0.002, seed=0)
    bad = df.copy()
    bad.loc[3, "loss"] *= 1.5
    w = np.ones(len(df))
    w[3] = 0.0
    from scalelab.laws.fitting import fit_approach3

    without = fit_approach3(load_table(df.drop(index=3)), top_starts=4)
    zeroed = fit_approach3(load_table(bad), weights=w, top_starts=4)
    for k in TRUTH.params:
        assert zeroed.params[k] == pytest.approx(without.params[k], rel=1e-4)
    assert fit_approach3(load_table(bad), top_starts=4).params["E"] != pytest.approx(without.params["E"], rel=1e-4)


def test_method_point_selection_on_curves():
    rows = [{"run": f"r{i}", "N": N, "D": D, "loss": 3.0} for i, N in enumerate((1e6, 1e7, 1e8))
            for D in (1e7, 5e7, 1e8)]
    t = load_table(pd.DataFrame(rows))
    sub, w = Method("f", min_progress=1.0).points(t)
    assert sorted(sub.D) == [1e8] * 3 and w is None  # finals only
    sub, _ = Method("p", min_progress=0.5).points(t)
    assert len(sub) == 6
    sub, _ = Method("d", drop_smallest=0.5).points(t)
    assert set(sub.df["run"]) == {"r1", "r2"}  # r0's final compute is in the bottom half of the log range
    _, w = Method("r", per_run=True, weight_power=1.0).points(t)
    assert w.sum() == pytest.approx(9) and np.argmax(w) in (6, 7, 8)  # largest run weighs most


OWN_TRUTH = {  # a law of each form, to draw exact points from
    "chinchilla": TRUTH.params,
    "kaplan": {"Nc": 8.8e13, "Dc": 5.4e13, "alpha_N": 0.076, "alpha_D": 0.095},  # Kaplan et al. 2020
    "compute": {"a": 20.0, "b": -0.1, "c": 1.7},
    "overtraining": {"E": 1.8, "a": 300.0, "b": 300.0, "eta": 0.15},
}


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_recovers_a_known_law(name):
    """Single-form methods recover the parameters of exact points drawn from their own form; the
    ensemble, on a Chinchilla law, recovers it in its Chinchilla member, reproduces the largest budget's
    points and extrapolates 10x within 1%."""
    grid = isoflop_table(TRUTH, BUDGETS, 6, noise=0.0, seed=0)
    method = Method(**{**METHODS[name].__dict__, "bootstrap": 0})
    if not method.members:
        truth = FittedLaw(form=method.form, params=OWN_TRUTH[method.form])
        df = grid.assign(loss=truth.predict(grid["N"].to_numpy(), grid["D"].to_numpy()))
        law = method.fit(load_table(df))
        for k, v in truth.params.items():
            assert law.params[k] == pytest.approx(v, rel=0.02), k
        return
    law = method.fit(load_table(grid))
    chin = next(m for m in law.params["members"] if m["form"] == "chinchilla")
    for k in ("alpha", "beta", "E"):
        assert chin["params"][k] == pytest.approx(TRUTH.params[k], rel=0.02), k
    top = grid[grid["C"] == grid["C"].max()]  # the Kaplan member is weighted towards the largest runs
    assert np.max(np.abs(law.predict(top["N"].to_numpy(), top["D"].to_numpy()) / top["loss"] - 1)) < 0.01
    n, d = float(TRUTH.allocate(1e21)["N_opt"][0]), float(TRUTH.allocate(1e21)["D_opt"][0])
    assert float(law.predict(n, d)) == pytest.approx(float(TRUTH.predict(n, d)), rel=0.01)


def test_fit_sigma_recovers_a_known_extrapolation_error():
    """Log errors drawn as N(0, (sigma log10(1 + r))^2): the learned sigma is the drawn one, and its
    intervals cover 90% of fresh draws."""
    rng = np.random.default_rng(0)
    n, sigma = 4000, 0.012
    ratio = np.exp(rng.uniform(0, np.log(100), n))
    pred = np.full(n, 3.0)
    actual = pred * np.exp(sigma * np.log10(1 + ratio) * rng.standard_normal(n))
    pts = {"pred": pred, "lo": pred, "hi": pred, "ratio": ratio, "actual": actual, "weight": np.ones(n)}
    s = fit_sigma(pts)
    assert s == pytest.approx(sigma, rel=0.06)
    fresh = dict(pts, actual=pred * np.exp(sigma * np.log10(1 + ratio) * rng.standard_normal(n)))
    assert coverage(s, fresh) == pytest.approx(0.9, abs=0.02)
    lo, hi = widen(pred[:3], pred[:3] * 0.99, pred[:3] * 1.02, np.zeros(3), s)  # no extrapolation: the bootstrap's
    assert np.allclose(lo, 2.97) and np.allclose(hi, 3.06)


def test_fit_defaults_to_the_backtested_method_and_predict_states_its_interval(synthetic_csv, default_fit):
    out = default_fit
    law = FittedLaw.load(out)
    assert law.info["method"] == DEFAULT_METHOD and "calibration" in law.info
    n, d = 3e9, 6e10  # about 10x past the largest fitted run
    r = run_cli("predict", out, "--params", n, "--tokens", d, "--json")
    p = json.loads(r.stdout)
    assert r.returncode == 0 and p["level"] == 0.9 and p["loss_lo"] < p["loss"] < p["loss_hi"]
    assert p["loss_lo"] < float(TRUTH.predict(n, d)) < p["loss_hi"] and p["extrapolation_ratio"] > 5
    wide = json.loads(run_cli("predict", out, "--params", n, "--tokens", d, "--json", "--level", "0.99").stdout)
    assert wide["loss_hi"] - wide["loss_lo"] > p["loss_hi"] - p["loss_lo"]
    c = json.loads(run_cli("predict", out, "--compute", 1e21, "--json").stdout)
    for k in ("N_opt", "D_opt", "loss"):
        assert c[k + "_lo"] <= c[k] <= c[k + "_hi"]
    assert c["N_opt"] * c["D_opt"] * 6 == pytest.approx(1e21, rel=1e-6)
    for args, msg in ((["fit", synthetic_csv, "--method", "nope"], "--method: unknown method"),
                      (["fit", synthetic_csv, "--method", "chinchilla", "--form", "kaplan"], "--method"),
                      (["predict", out, "--params", n, "--tokens", d, "--level", "1.5"], "--level must be in")):
        r = run_cli(*args)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_suggestions_narrow_the_interval_within_budget():
    df = isoflop_table(TRUTH, BUDGETS[:3], 6, noise=0.003, seed=2)
    law = Method("chinchilla", bootstrap=0, sigma_per_decade=0.01).fit(load_table(df))
    target = TRUTH.allocate(1e22)
    tN, tD = float(target["N_opt"][0]), float(target["D_opt"][0])
    cN, cD = candidate_grid(df["N"].min(), tN, 1e21)
    res = suggest(law, df["N"], df["D"], df["loss"], tN, tD, cN, cD, k=3)
    widths = [res["target"]["loss_hi"] - res["target"]["loss_lo"]] + \
        [p["loss_hi_after"] - p["loss_lo_after"] for p in res["suggestions"]]
    assert len(res["suggestions"]) == 3 and all(a > b for a, b in zip(widths, widths[1:]))
    assert all(p["C"] <= 1e21 * (1 + 1e-9) for p in res["suggestions"])
    assert len({(p["N"], p["D"]) for p in res["suggestions"]}) == 3


# slow-marked to keep `make test` under 10 minutes with its installs; `make test-all` runs it
@pytest.mark.slow
def test_ladder_suggest_command(synthetic_csv, default_fit, tmp_path):
    r = run_cli("ladder", "suggest", synthetic_csv, "--compute", 1e22, "-k", 2, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    t = res["target"]
    assert t["C"] == pytest.approx(1e22) and t["loss_lo"] < t["loss"] < t["loss_hi"]
    assert len(res["suggestions"]) == 2 and all(p["C"] <= res["max_flops"] for p in res["suggestions"])
    last = res["suggestions"][-1]
    assert last["loss_hi_after"] - last["loss_lo_after"] < t["loss_hi"] - t["loss_lo"]
    fit = default_fit
    for args, msg in (([], "give the target"), (["--compute", 1e18], "inside the fitted runs"),
                      (["--params", -1, "--tokens", 1e9], "--params must be a positive number, got -1"),
                      (["--compute", 1e22, "--max-flops", 1.0], "no candidate run fits")):
        r = run_cli("ladder", "suggest", fit, *args)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run_cli("ladder", "suggest", tmp_path / "missing.csv", "--compute", 1e22)
    assert r.returncode == 2 and "not found" in r.stderr
