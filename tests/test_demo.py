"""The end-to-end demo (its --quick ladder): every artefact the issue asks for, and a re-run resumes."""

import importlib.util
import json

import pytest

from conftest import run_cli
from scalelab.demo import HOLDOUT_FACTOR, QUICK
from scalelab.ladder.results import open_store
from scalelab.laws.law import FittedLaw
from scalelab.train.rundir import RunDir


def test_quick_demo_end_to_end(quick_demo):
    out, r = quick_demo
    s = json.loads((out / "summary.json").read_text())
    assert s["runs"] == 13 and s["ladder_runs"] == 12
    for k in ("E", "A", "B", "alpha", "beta"):
        assert s["fit"]["approach3"][k] > 0
    assert 0 < s["fit"]["approach2"]["a"] < 1
    h = s["holdout"]
    assert h["C"] == HOLDOUT_FACTOR * QUICK.budgets[-1] and abs(6 * h["N"] * h["D"] / h["C"] - 1) < 0.05
    # the saved fit file reproduces the prediction the demo reported, and the held-out run's saved
    # config.json describes the run the store recorded
    law = FittedLaw.load(out / "fit_selected.json")
    assert float(law.predict(h["N"], h["D"])) == pytest.approx(h["predicted_loss"], rel=1e-12)
    cfg = RunDir(out / "runs" / h["name"]).read_config()
    assert cfg.model.num_params_total == h["N"] and cfg.total_steps * cfg.train.tokens_per_step == h["D"]
    assert abs(h["relative_error"]) < 0.15  # sanity at this tiny scale; the full demo's figure is in docs/LOG.md
    assert [a["C"] for a in s["allocations"]] == [1e15, 1e18, 1e21]
    assert s["wall_seconds"] > 0 and "fitted laws" in r.stdout
    for f in ("runs.csv", "fit_approach3.json", "fit_selected.json", "ladder.sqlite", "report.html",
              "figures/landscape.png", "figures/isoflop.svg"):
        assert (out / f).exists()
    if importlib.util.find_spec("tensorboard"):  # every rung's curves for `tensorboard --logdir OUT/runs`
        assert all(any((d / "tensorboard").glob("events.out.tfevents.*")) for d in (out / "runs").iterdir())


@pytest.mark.slow  # 18 s: a second demo refits its laws and rewrites its report
def test_quick_demo_rerun_trains_nothing(quick_demo):
    out, _ = quick_demo
    h = json.loads((out / "summary.json").read_text())["holdout"]
    # a second run finds everything done: nothing is retrained, results are unchanged
    r2 = run_cli("demo", "--quick", "--out", out)
    assert r2.returncode == 0, r2.stderr[-2000:]
    store = open_store(out)
    assert all(row["attempts"] == 1 and row["status"] == "done" for row in store.runs())
    assert json.loads((out / "summary.json").read_text())["holdout"]["actual_loss"] == h["actual_loss"]
