"""Rung-quality checks (ladder/quality.py) on a real ladder: the quick demo's, with one rung retrained
at ten times its learning rate."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from scalelab.config import load_dict
from scalelab.ladder.plan import plan, spec_from_stored
from scalelab.ladder.quality import check_rungs, curve_flags
from scalelab.ladder.results import open_store, results_table, rung_quality
from scalelab.laws.fitting import fit_approach3
from scalelab.laws.table import load_table
from scalelab.train.loop import train
from scalelab.train.rundir import RunDir


def _curves(records):
    out = {}
    for name, rec in records:
        out.setdefault(name, []).append((rec.step, rec.train_loss, rec.val_loss))
    return out


@pytest.fixture(scope="module")
def ladders(quick_demo, tmp_path_factory):
    """(well-tuned finals, mistuned finals, curves of each, rule lrs, the mistuned rung, the holdout row)."""
    out, _ = quick_demo
    store = open_store(out)
    table = results_table(store)
    runs = {r["name"]: r for r in store.runs()}
    curves = _curves(store.records())
    rule = {r.name: r.config.optim.lr for r in plan(spec_from_stored(store.get_meta("spec")))}
    store.close()
    hold = table[table["holdout"] & table["final"]].iloc[0]
    good = table[table["final"] & ~table["holdout"]].reset_index(drop=True)
    good["steps"] = good["run"].map(lambda n: runs[n]["steps"])
    middle = sorted(good["budget"].unique())[1]
    victim = good[good["budget"] == middle].sort_values("loss").iloc[0]["run"]  # the middle budget's valley
    cfg = load_dict(__import__("json").loads(runs[victim]["spec"])["config"])
    cfg = replace(cfg, optim=replace(cfg.optim, lr=10 * cfg.optim.lr))
    run_dir = tmp_path_factory.mktemp("mistuned") / victim
    summary = train(cfg, run_dir, log=lambda *a: None)
    recs = RunDir(run_dir).read_metrics()
    bad = good.copy()
    i = bad.index[bad["run"] == victim][0]
    bad.loc[i, "loss"], bad.loc[i, "lr"] = summary["final"]["val_loss"], cfg.optim.lr
    bad_curves = {**curves, victim: [(r.step, r.train_loss, r.val_loss) for r in recs]}
    return good, bad, curves, bad_curves, rule, victim, hold


def test_the_mistuned_rung_is_flagged_and_no_other(ladders):
    good, bad, curves, bad_curves, rule, victim, _ = ladders
    checked = check_rungs(bad, bad_curves, rule)
    flagged = checked[checked["quality"] != ""]
    assert list(flagged["run"]) == [victim], checked[["run", "z", "quality"]]
    assert "off the trend" in flagged["quality"].iloc[0] and "10x the ladder's rule" in flagged["quality"].iloc[0]
    # the ladder as trained: that rung, at its planned lr, is not flagged
    as_trained = check_rungs(good, curves, rule)
    assert as_trained.loc[as_trained["run"] == victim, "quality"].iloc[0] == ""


def test_excluding_the_flagged_rung_brings_the_fit_back(ladders):
    """The fit without the flagged rung predicts the held-out run (4x the largest budget) closer to
    the well-tuned ladder's fit than the fit that keeps it."""
    good, bad, _, bad_curves, rule, victim, hold = ladders
    checked = check_rungs(bad, bad_curves, rule)

    def predict(df):
        law = fit_approach3(load_table(df[["run", "N", "D", "loss", "quality"]] if "quality" in df else
                                       df[["run", "N", "D", "loss"]]), bootstrap=0)
        return float(np.atleast_1d(law.predict(hold["N"], hold["D"]))[0])

    ref, kept = predict(good), predict(bad)
    table = load_table(checked[["run", "N", "D", "loss", "quality"]], exclude_flagged=True)
    excluded = float(np.atleast_1d(fit_approach3(table, bootstrap=0).predict(hold["N"], hold["D"]))[0])
    assert any(victim in n for n in table.notes)
    assert abs(excluded - ref) < abs(kept - ref), (ref, kept, excluded)


def test_the_store_path_reports_the_checks(quick_demo):
    out, _ = quick_demo
    q = rung_quality(open_store(out))
    assert set(q["run"]) and "quality" in q and q["noise"].iloc[0] > 0


def test_curve_flags_on_constructed_curves():
    smooth = [(s, 5.0 / math.sqrt(s), None) for s in range(1, 101)]
    assert curve_flags(smooth, 100) == []
    spike = [(s, v * (1.6 if s == 50 else 1.0), None) for s, v, _ in smooth]
    assert curve_flags(spike, 100)[0].startswith("loss spike at step 50")
    late = smooth[:-1] + [(100, 0.5, 3.3)]
    assert curve_flags([(50, 0.7, 3.0), *late], 100)[-1].startswith("late divergence")
    assert curve_flags([(1, float("nan"), None)], 10) == ["non-finite loss"]


def test_seed_replicas_set_the_noise_scale():
    N = np.repeat([1e5, 3e5, 1e6], 3)
    D = np.tile([1e7, 3e7, 1e8], 3)
    loss = 1.7 + 400 / N ** 0.5 + 400 / D ** 0.3
    df = pd.DataFrame({"run": [f"r{i}" for i in range(9)], "N": N, "D": D, "loss": loss, "lr": 1e-2,
                       "replica_of": ""})
    reps = df.iloc[[4, 4]].assign(run=["r4-s1", "r4-s2"], replica_of="r4", loss=loss[4] * np.exp([0.03, -0.03]))
    checked = check_rungs(pd.concat([df, reps], ignore_index=True))
    # ln losses x, x + 0.03, x - 0.03: a standard deviation of 0.03 (n - 1 in the denominator)
    assert checked["noise_source"].iloc[0] == "seed replicas" and checked["noise"].iloc[0] == pytest.approx(0.03)
    assert (checked["quality"] == "").all()  # a law-abiding ladder: nothing off its trend
