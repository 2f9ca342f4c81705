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
