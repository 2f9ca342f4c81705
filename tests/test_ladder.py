"""Ladders: planning, the store, kill-and-resume safety, WSD branches, export -> fit."""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli
from scalelab.errors import UserError
from scalelab.ladder.executors import run_ladder
from scalelab.ladder.plan import LadderSpec, load_spec, plan, spec_to_toml
from scalelab.ladder.results import open_store, results_table
from scalelab.train.loop import train
from scalelab.train.rundir import RunDir

TINY = """
[ladder]
budgets = [4e9, 1.2e10]
sizes_per_budget = 2
span = 3.0
tokens_per_param = 40.0
strategy = "{strategy}"
vocab_size = 300
seq_len = 32
min_width = 16
threads = 1
eval_tokens = 2048
evals_per_run = 4

[data]
max_bytes = 1000000
val_fraction = 0.1
tokenizer_train_bytes = 200000
"""


def tiny_spec(tmp_path, strategy="cosine", sizes=2) -> Path:
    p = tmp_path / f"ladder-{strategy}.toml"
    p.write_text(TINY.format(strategy=strategy).replace("sizes_per_budget = 2", f"sizes_per_budget = {sizes}"))
    return p


def test_plan_grid_properties():
    spec = LadderSpec(budgets=(1e11, 3e11, 1e12), sizes_per_budget=4, span=16, tokens_per_param=40,
                      vocab_size=512, min_width=16)
    rungs = plan(spec)
    assert len(rungs) == 12
    for C in spec.budgets:
        rs = [r for r in rungs if r.budget == C]
        assert len({r.N for r in rs}) == 4  # distinct sizes
        for r in rs:
            assert abs(r.C / C - 1) < 0.1  # every run spends its budget (up to whole steps)
            assert r.D == r.steps * r.config.train.batch_size * spec.seq_len
            assert 1 <= r.config.schedule.warmup_steps <= r.steps // 4
    # bigger budgets get bigger batches and lower learning rates (DeepSeek LLM heuristics)
    lrs = {r.budget: r.config.optim.lr for r in rungs}
    assert lrs[1e11] > lrs[3e11] > lrs[1e12]
    spec2 = load_spec_from_text(spec_to_toml(spec))
    assert spec2 == spec


def load_spec_from_text(text):
    import tomllib

    from scalelab.ladder.plan import spec_from_dict

    return spec_from_dict(tomllib.loads(text))


def test_impossible_budget_rejected_at_plan_time():
    with pytest.raises(UserError, match="too small"):
        plan(LadderSpec(budgets=(1e6,), vocab_size=512, min_width=16))
    r = run_cli("ladder", "plan", "--budgets", "1e6,1e12")
    assert r.returncode == 2 and "too small" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("ladder", "plan", "--budgets", "abc")
    assert r.returncode == 2 and "--budgets" in r.stderr


def test_plan_cli_json_and_file(tmp_path):
    out = tmp_path / "l.toml"
    r = run_cli("ladder", "plan", "--budgets", "1e11,3e11", "--sizes-per-budget", "3", "--json", "--out", out)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 6 and {"name", "N", "N_non_embedding", "D", "C", "steps", "batch_size", "lr"} <= set(rows[0])
    assert len(plan(load_spec(out))) == 6


def _final_losses(out):
    store = open_store(out)
    runs = store.runs()
    store.close()
    return {r["name"]: (r["status"], r["final_loss"], r["attempts"]) for r in runs}


def test_a_ladder_killed_mid_run_resumes_to_the_same_losses(tmp_path):
    """SIGKILL to `ladder run` once a run has recorded points (mid-training), then run it again: every run
    once, bit-identical final losses, no point twice. (`make test-all` kills at random moments, many times.)"""
    import sqlite3
    import time

    spec_file = tiny_spec(tmp_path)
    out = tmp_path / "killed"
    exe = Path(sys.executable).parent / "scalelab"
    p = subprocess.Popen([str(exe), "ladder", "run", str(spec_file), "--out", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.2)
        try:
            with sqlite3.connect(out / "ladder.sqlite") as db:
                if db.execute("SELECT COUNT(*) FROM points").fetchone()[0] >= 2:
                    break
        except sqlite3.Error:  # not created yet
            continue
    assert p.poll() is None, "the ladder finished before it could be killed"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    run_ladder(load_spec(spec_file), out)  # the same ladder again, in this process
    ref = tmp_path / "ref"
    run_ladder(load_spec(spec_file), ref)
    got, expected = _final_losses(out), _final_losses(ref)
    assert set(got) == set(expected) and all(s == "done" for s, _, _ in got.values())
    assert any(a > 1 for _, _, a in got.values())  # the killed run was started twice
    assert {k: v[1] for k, v in got.items()} == {k: v[1] for k, v in expected.items()}
    assert not results_table(open_store(out)).duplicated(["run", "step"]).any()


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path):
    spec_file = tiny_spec(tmp_path)
    ref = tmp_path / "ref"
    run_ladder(load_spec(spec_file), ref)
    expected = {k: v[1] for k, v in _final_losses(ref).items()}
    assert len(expected) == 4 and all(v is not None for v in expected.values())

    out = tmp_path / "killed"
    exe = Path(sys.executable).parent / "scalelab"
    rng = random.Random(1234)
    kills = 0
    for _ in range(12):
        p = subprocess.Popen([str(exe), "ladder", "run", str(spec_file), "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            p.wait(timeout=rng.uniform(2.0, 4.5))
            assert p.returncode == 0, p.stderr.read().decode()
            break
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # the whole process group, mid-write if it happens to be
            p.wait()
            kills += 1
    else:
        r = run_cli("ladder", "run", spec_file, "--out", out)
        assert r.returncode == 0, r.stderr
    got = _final_losses(out)
    assert kills >= 2
    assert set(got) == set(expected)  # every run exactly once (name is the primary key)
    assert all(s == "done" for s, _, _ in got.values())
    assert any(a > 1 for _, _, a in got.values())  # some run really was interrupted and resumed
    for name, loss in expected.items():
        assert got[name][1] == loss, name  # identical results, bit for bit
    df = results_table(open_store(out))
    assert not df.duplicated(["run", "step"]).any()


def test_wsd_branches_equal_direct_runs_and_export_fits(tmp_path):
    spec_file = tiny_spec(tmp_path, "wsd", sizes=3)
    spec = load_spec(spec_file)
    rungs = plan(spec)
    groups = {r.group for r in rungs}
    assert len(groups) < len(rungs)  # some shape serves several budgets: real branching
    out = tmp_path / "wsd"
    r = run_cli("ladder", "run", spec_file, "--out", out, "--parallel", "2")
    assert r.returncode == 0, r.stderr
    status = _final_losses(out)
    assert all(s == "done" for s, _, _ in status.values())
    # a branch started from its group's branch point, yet its saved config.json alone retrains it
    # from scratch to the same loss, bit for bit: the config describes the whole schedule
    main_names = {max((r for r in rungs if r.group == g), key=lambda r: r.steps).name for g in groups}
    branch = min((r for r in rungs if r.name not in main_names), key=lambda r: r.steps)
    run = RunDir(out / "runs" / branch.name)
    assert run.read_summary()["resumed_from_step"] == branch.decay_start > 0
    saved = run.read_config()
    assert saved.schedule.decay_start_step == branch.decay_start and saved == branch.config
    direct = train(saved, tmp_path / "direct")
    assert direct["resumed_from_step"] == 0
    assert direct["final"]["val_loss"] == status[branch.name][1]

    csv = tmp_path / "runs.csv"
    r = run_cli("ladder", "export", out, "--out", csv)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(csv)
    assert {"run", "N", "N_non_embedding", "D", "C", "loss", "final"} <= set(df.columns)
    assert df["final"].sum() == len(rungs)
    run_cli("ladder", "export", out, "--out", tmp_path / "runs.parquet")
    assert len(pd.read_parquet(tmp_path / "runs.parquet")) == len(df)
    r = run_cli("fit", csv, "--form", "kaplan", "--json")  # the exported table is what `fit` reads
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n_points"] == len(rungs)  # final points only
    r = run_cli("ladder", "status", out)
    assert r.returncode == 0 and f"{len(rungs)}/{len(rungs)} done" in r.stdout

    r = run_cli("ladder", "export", out, "--curves", "--out", tmp_path / "curves.csv")  # what `fit --curves` reads
    assert r.returncode == 0, r.stderr
    from scalelab.laws.curve_table import read_curves

    curves = {c.name: c for c in read_curves(tmp_path / "curves.csv").curves}
    assert set(curves) == {r.name for r in rungs}
    for r in rungs:  # every run, branches included, carries its whole schedule: warmup, peak, its own cooldown
        c, cfg = curves[r.name], r.config
        assert len(c.lr) == r.steps + 1 and c.lr.max() == pytest.approx(cfg.optim.lr)
        assert c.lr[-1] == pytest.approx(cfg.optim.lr * cfg.schedule.min_lr_ratio, rel=1e-6)
        assert c.steps.max() == r.steps


def test_rerun_with_another_ladder_is_refused(tmp_path):
    spec_file = tiny_spec(tmp_path)
    out = tmp_path / "o"
    run_ladder(load_spec(spec_file), out, only=[])  # registers the ladder, trains nothing
    other = tmp_path / "other.toml"
    other.write_text(TINY.format(strategy="cosine").replace("budgets = [4e9, 1.2e10]", "budgets = [5e9, 1.2e10]"))
    r = run_cli("ladder", "run", other, "--out", out)
    assert r.returncode == 2 and "different ladder" in r.stderr


def test_store_keeps_every_measured_field_of_a_record(tmp_path):
    """The store keeps what the loop measured (grad norm, MFU, MoE expert load, task metrics), not a subset."""
    from scalelab.ladder.store import Store
    from scalelab.train.records import MetricsRecord

    rec = MetricsRecord(step=10, tokens=5120, flops=3.1e9, lr=1e-3, train_loss=4.2, grad_norm=0.73,
                        tokens_per_s=1.5e4, mfu=0.31, val_loss=4.4, val_bpb=1.9, lb_loss=1.02, z_loss=3e-4,
                        dropped_frac=0.0, expert_load=(0.3, 0.2, 0.25, 0.25),
                        tasks={"addition:digits=2,format=plain": {"exact_match": 0.25, "answer_bpb": 1.5}})
    store = Store(tmp_path / "s.sqlite")
    store.add_point("r", rec)
    store.add_point("r", MetricsRecord(step=20, tokens=10240, flops=6.2e9, lr=1e-3, train_loss=4.0))
    store.close()
    got = Store(tmp_path / "s.sqlite").records("r")  # reopened: persisted, not cached
    assert got[0] == ("r", rec)
    assert got[1][1].val_loss is None and got[1][1].expert_load is None


def test_ladder_with_tasks_stores_and_exports_every_evaluation(tmp_path):
    """Each rung is scored on the ladder's tasks at every evaluation; the store keeps them and
    `ladder export --tasks` writes the table `fit --metric` reads, one row per run, step and task."""
    spec_file = tiny_spec(tmp_path, sizes=1)
    spec_file.write_text(spec_file.read_text() + '\n[tasks]\nnames = ["addition:digits=1", "addition:digits=2"]\n'
                                                 'eval_problems = 30\n')
    out = tmp_path / "lad"
    r = run_cli("ladder", "run", spec_file, "--out", out)
    assert r.returncode == 0, r.stderr
    csv = tmp_path / "tasks.csv"
    r = run_cli("ladder", "export", out, "--out", csv, "--tasks")
    assert r.returncode == 0 and "2 tasks" in r.stdout, r.stderr
    df = pd.read_csv(csv)
    store = open_store(out)
    assert len(df) == 2 * len(results_table(store))  # both tasks at every evaluated point
    store.close()
    assert set(df["task"]) == {"addition:digits=1,format=plain", "addition:digits=2,format=plain"}
    assert df["exact_match"].between(0, 1).all() and (df["answer_bpb"] > 0).all()
    from scalelab.ladder.progress import done_flops  # what `ladder run`'s progress bar counts: all of it

    rungs, store = plan(load_spec(spec_file)), open_store(out)
    assert done_flops(store, {r.name: r.N for r in rungs}) == pytest.approx(sum(r.C for r in rungs), rel=1e-12)
    store.close()
    # the task loss falls as each run trains (the tasks are not in this data: only the digits and '=' help)
    first = df.sort_values("step").groupby(["run", "task"])["answer_bpb"].first()
    last = df.sort_values("step").groupby(["run", "task"])["answer_bpb"].last()
    assert (last < first).mean() >= 0.75, pd.concat([first, last], axis=1)
    from scalelab.report.data import gather
    from scalelab.report.figures import tasks as task_figure
    from scalelab.report.static import write_static

    d = gather(out)  # the report draws both steps per task (interactive and static)
    assert len(task_figure(d).data) == 2 * 2 * 2 and (tmp_path / "png" / "tasks.png") in write_static(
        d, tmp_path / "png")
    r = run_cli("ladder", "export", tmp_path / "nowhere", "--out", csv, "--tasks")
    assert r.returncode == 2 and "no ladder" in r.stderr


@pytest.mark.slow
def test_tracked_ladder_is_one_mlflow_experiment_with_a_run_per_rung(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec_file = tiny_spec(tmp_path, sizes=1)
    spec_file.write_text(spec_file.read_text().replace("[ladder]", '[ladder]\nloggers = ["tensorboard", "mlflow"]'))
    out = tmp_path / "tracked"
    r = run_cli("ladder", "run", spec_file, "--out", out)
    assert r.returncode == 0, r.stderr
    names = {r.name for r in plan(load_spec(spec_file))}
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tracked"], output_format="list")
    assert {r.info.run_name for r in runs} == names and all(r.data.tags["ladder"] == str(out) for r in runs)
    assert all(any((out / "runs" / n / "tensorboard").glob("events.out.tfevents.*")) for n in names)
