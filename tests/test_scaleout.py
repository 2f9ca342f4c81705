"""Scale-out: the Ray executor against the local one, a killed Ray worker, and torchrun data parallelism."""

import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SMALL_DATA, run_cli
from scalelab.ladder.executors import run_ladder
from scalelab.ladder.plan import load_spec, plan
from scalelab.ladder.results import open_store
from scalelab.train.rundir import RunDir
from test_ladder import TINY, tiny_spec

# the Ray tests need ray (the [ray] extra, `make test-all`); the torchrun tests below do not
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray: pip install 'scalelab[ray]'")


def _finals(out):
    store = open_store(out)
    runs = {r["name"]: r for r in store.runs()}
    store.close()
    return runs


@pytest.mark.slow  # 27 s; `make test-all` (keeps `make test` under 10 minutes with installs)
@needs_ray
def test_ray_executor_matches_the_local_executor(tmp_path):
    spec_file = tiny_spec(tmp_path)
    local, remote = tmp_path / "local", tmp_path / "ray"
    run_ladder(load_spec(spec_file), local)
    r = run_cli("ladder", "run", spec_file, "--out", remote, "--executor", "ray")
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _finals(local), _finals(remote)
    assert set(a) == set(b) == {x.name for x in plan(load_spec(spec_file))}
    for name in a:
        assert b[name]["status"] == "done"
        assert json.loads(a[name]["spec"]) == json.loads(b[name]["spec"])
        assert b[name]["final_loss"] == pytest.approx(a[name]["final_loss"], abs=1e-3)
    # metrics were streamed into the driver's store, one point per (run, step)
    with sqlite3.connect(remote / "ladder.sqlite") as c:
        assert c.execute("SELECT count(*) FROM points").fetchone()[0] > len(a)


@pytest.mark.slow  # 19 s here; resume after a kill is also covered by the local executor's SIGKILL test
@needs_ray
def test_killed_ray_worker_is_retried_and_resumes_from_its_checkpoint(tmp_path):
    from scalelab.ladder.ray_executor import worker_pids_of

    spec_file = tmp_path / "one.toml"
    spec_file.write_text(TINY.format(strategy="cosine").replace("budgets = [4e9, 1.2e10]", "budgets = [6e10]")
                         .replace("sizes_per_budget = 2", "sizes_per_budget = 1").replace("evals_per_run = 4",
                                                                                           "evals_per_run = 10"))
    out = tmp_path / "o"
    exe = Path(sys.executable).parent / "scalelab"
    proc = subprocess.Popen([str(exe), "ladder", "run", str(spec_file), "--out", str(out), "--executor", "ray"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 300
    try:
        while time.time() < deadline and killed is None and proc.poll() is None:
            runs = list((out / "runs").glob("*")) if (out / "runs").exists() else []
            for rd in runs:
                if (rd / "checkpoints" / "LATEST").exists() and not (rd / "summary.json").exists():
                    pids = worker_pids_of()
                    if pids:
                        os.kill(pids[0], signal.SIGKILL)
                        killed = rd
                        break
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "the run finished before a worker could be killed; make the rung longer"
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["resumed_from_step"] > 0  # the retry continued from the checkpoint, not from scratch
    runs = _finals(out)
    assert len(runs) == 1 and all(r["status"] == "done" for r in runs.values())
    with sqlite3.connect(out / "ladder.sqlite") as c:
        dup = c.execute("SELECT run, step, count(*) FROM points GROUP BY run, step HAVING count(*) > 1").fetchall()
    assert not dup
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # the metrics file reads like an uninterrupted run's


def _torchrun(nproc, args, env=None):
    exe = Path(sys.executable).parent / "torchrun"
    return subprocess.run([str(exe), "--standalone", f"--nproc-per-node={nproc}", "-m", "scalelab.train", *args],
                          capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


TRAIN = ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.max_seq_len=32", *SMALL_DATA,
         "train.batch_size=8", "train.seq_len=32", "train.max_steps=20", "train.log_every=2", "train.eval_every=10",
         "train.eval_tokens=1024", "train.threads=1", "train.compile=off", "train.checkpoint_every=10",
         "train.progress=false"]


def _losses(run_dir):
    return {r.step: r.train_loss for r in RunDir(run_dir).read_metrics()}


# Both are marked slow (about 20 s each here; `make test-all`) to keep `make test` under 10 minutes with
# its installs.
@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_torchrun_two_ranks_match_one_process(tmp_path, parallel):
    one = tmp_path / "one"
    r = run_cli("train", *TRAIN, "--out", one)
    assert r.returncode == 0, r.stderr[-2000:]
    two = tmp_path / "two"
    r = _torchrun(2, [*TRAIN, f"train.parallel={parallel}", "--out", str(two)])
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _losses(one), _losses(two)
    assert a.keys() == b.keys() and len(a) == 10
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-4)
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2
    # resume across a change of K: drop the last checkpoint, continue with one process
    ck = two / "checkpoints"
    shutil.rmtree(ck / "step_00000020")
    (ck / "LATEST").write_text("step_00000010")
    (two / "summary.json").unlink()
    r = run_cli("train", *TRAIN, "--out", two, "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    c = _losses(two)
    for step in a:
        assert c[step] == pytest.approx(a[step], abs=1e-4)
