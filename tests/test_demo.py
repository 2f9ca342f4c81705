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
    c = s["corpus"]  # the corpus's size and its repetition, as the GPU demo must say
    assert c["train_tokens"] > 1e6 and c["max_epochs"] == pytest.approx(c["longest_run_tokens"] / c["train_tokens"])
    assert s["wall_seconds"] > 0 and "fitted laws" in r.stdout
    import torch

    if not torch.cuda.is_available():  # the fixture ran `demo --gpu`: it says what it trains instead
        assert "no CUDA device: `demo --gpu` trains its toy-scale twin" in r.stdout
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


def test_the_gpu_demo_ladder_is_planned_for_one_gpu():
    """`demo --gpu`'s ladder on a CUDA machine (planned here, nothing trained): 12 rungs of about 1-15M
    parameters at seq 512, the held-out run at 4x the largest budget, the corpus every installed Python file;
    --budgets replaces the budgets, and without CUDA the command falls back to the quick ladder."""
    from dataclasses import replace

    from scalelab.demo import GPU_DEMO, demo_spec, installed_python
    from scalelab.ladder.plan import plan

    rungs = plan(replace(GPU_DEMO, data=replace(GPU_DEMO.data, corpus=str(installed_python()))))
    ns = sorted(r.N for r in rungs)
    assert len(rungs) == 12 and 5e5 < ns[0] < 3e6 and 8e6 < ns[-1] < 4e7, ns
    assert all(r.config.train.seq_len == 512 and r.config.model.vocab_size == 4096 for r in rungs)
    assert any(installed_python().rglob("*.py"))  # the corpus exists on any machine with scalelab installed
    assert demo_spec(gpu=True, budgets=(1e11, 2e11)).budgets == (1e11, 2e11)
    import torch

    if not torch.cuda.is_available():
        assert demo_spec(gpu=True).budgets == QUICK.budgets
