"""Faults a real user meets (#19): a corrupt checkpoint, a full disk while saving one. Each test says
what must hold afterwards: the run resumes, nothing is lost, nothing half-written is taken as complete."""

import errno

import pytest
import torch

from conftest import run_cli
from scalelab.errors import UserError
from scalelab.train import checkpoint
from scalelab.train.hooks import StopAt
from scalelab.train.loop import train
from scalelab.train.rundir import RunDir


def _cfg(small_cfg):
    return small_cfg("train.max_steps=24", "train.eval_every=8", "train.log_every=4")


def _losses(run_dir) -> list:
    return [(r.step, r.train_loss, r.val_loss) for r in RunDir(run_dir).read_metrics()]


def test_a_corrupt_latest_checkpoint_falls_back_to_the_newest_good_one(small_cfg, small_dataset, tmp_path, capsys):
    """Truncate the newest checkpoint's weights: resume says so, starts from the one before, and the
    finished run is bit for bit the uninterrupted one."""
    cfg, full, part = _cfg(small_cfg), tmp_path / "full", tmp_path / "part"
    train(cfg, full, dataset=small_dataset)
    train(cfg, part, dataset=small_dataset, hooks=StopAt(16))
    newest = RunDir(part).checkpoint(16) / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # a copy interrupted
    assert RunDir(part).latest_checkpoint().name == "step_00000008"
    assert "step_00000016 (model.safetensors has 100 bytes" in capsys.readouterr().err
    train(cfg, part, dataset=small_dataset, resume=True)
    assert _losses(part) == _losses(full)


def test_every_checkpoint_corrupt_is_one_line(small_cfg, small_dataset, tmp_path):
    train(_cfg(small_cfg), tmp_path, dataset=small_dataset, hooks=StopAt(16))
    for ck in RunDir(tmp_path).checkpoints.glob("step_*"):
        (ck / "optimizer.pt").write_bytes(b"")
    with pytest.raises(UserError, match="every checkpoint in .* is corrupt"):
        RunDir(tmp_path).latest_checkpoint()
    r = run_cli("train", "--out", tmp_path, "--resume", "train.max_steps=24")
    assert r.returncode == 2 and "is corrupt" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_full_disk_while_saving_keeps_the_last_good_checkpoint(small_cfg, small_dataset, tmp_path, monkeypatch):
    """ENOSPC on the second save: one error naming the last good checkpoint, no partial checkpoint
    left behind, and the run resumes from it once there is space."""
    cfg = _cfg(small_cfg)
    real, calls = checkpoint.save_model, []

    def full_disk(model, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(model, path)

    monkeypatch.setattr(checkpoint, "save_model", full_disk)
    with pytest.raises(UserError, match=r"No space left on device; the last good checkpoint is .*step_00000008"):
        train(cfg, tmp_path, dataset=small_dataset)
    ckpts = RunDir(tmp_path).checkpoints
    assert sorted(p.name for p in ckpts.iterdir()) == ["LATEST", "step_00000008"]  # no hidden partial dir
    monkeypatch.setattr(checkpoint, "save_model", real)
    s = train(cfg, tmp_path, dataset=small_dataset, resume=True)
    assert s["steps"] == 24 and torch.isfinite(torch.tensor(s["final"]["val_loss"]))


def _hold(path):
    """Another process holding a lock, as a running `ladder run` or `train` would."""
    import subprocess
    import sys
    import time

    code = ("import sys, time; from scalelab.io import hold_lock\n"
            "with hold_lock(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    time.sleep(0.05)
    return p


def test_one_writer_per_ladder_folder_and_run_directory(tmp_path):
    """A second `ladder run` (or `train --resume`) on a folder in use stops at once, naming the holder;
    once the holder is killed its lock is taken over."""
    import os
    import signal

    from scalelab.io import hold_lock
    from test_ladder import tiny_spec

    spec, lad = tiny_spec(tmp_path), tmp_path / "lad"
    p = _hold(lad / "ladder.lock")
    r = run_cli("ladder", "run", spec, "--out", lad)
    assert r.returncode == 2 and f"ladder {lad} is in use by pid {p.pid}" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (lad / "ladder.sqlite").exists()  # no work done
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    with hold_lock(lad / "ladder.lock", "ladder"):  # the killed holder's lock is free
        assert f"pid {os.getpid()}" in (lad / "ladder.lock").read_text()

    run = tmp_path / "run"
    q = _hold(run / "run.lock")
    r = run_cli("train", "--out", run, "--resume", "train.max_steps=4", "train.progress=false")
    assert r.returncode == 2 and f"run directory {run} is in use by pid {q.pid}" in r.stderr, r.stderr
    q.kill()
    q.wait()


@pytest.mark.parametrize("command", [["ladder", "status"], ["report"]])
def test_a_damaged_store_is_one_line(tmp_path, command):
    (tmp_path / "ladder.sqlite").write_bytes(b"not a database, a half-copied file" * 100)
    r = run_cli(*command, tmp_path)
    assert r.returncode == 2 and "is not a readable ladder store" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
