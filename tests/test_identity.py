"""A run is what its config says: reuse and resume only a run of the same identity (config.py), the
refusal names the keys that differ; `train --resume` continues with the run's own config; held-out
runs stay out of a fit unless asked."""

import json

import pandas as pd
import pytest

from conftest import SMALL_DATA, TINY_MODEL, run_cli
from scalelab.config import fingerprint, identity_diff
from scalelab.errors import UserError
from scalelab.laws.table import load_table
from scalelab.train.hooks import Hooks
from scalelab.train.loop import train
from scalelab.train.rundir import RunDir
from scalelab.train.runner import ensure_trained


class StopAt(Hooks):
    def __init__(self, step):
        self.step = step

    def stop_after(self, step):
        return step >= self.step


def test_the_fingerprint_ignores_how_a_run_is_carried_out_and_sees_what_it_computes(small_cfg):
    base = small_cfg()
    assert fingerprint(base) == fingerprint(small_cfg("train.threads=1", "train.progress=true",
                                                      "train.checkpoint_every=5", "train.compile=off"))
    for key in ("optim.lr=0.05", "train.seed=1", "train.max_steps=7", "schedule.kind=constant",
                "data.val_fraction=0.1"):
        assert fingerprint(small_cfg(key)) != fingerprint(base), key
    assert identity_diff(base, small_cfg("optim.lr=0.05")) == ["optim.lr: 0.003 -> 0.05"]


def test_a_lab_restarted_with_other_settings_is_refused_not_reused(small_cfg, small_dataset, tmp_path):
    cfg = small_cfg("train.max_steps=6")
    first = ensure_trained(cfg, tmp_path / "run", dataset=small_dataset)
    assert ensure_trained(small_cfg("train.max_steps=6", "train.threads=1"), tmp_path / "run") == first  # same run
    with pytest.raises(UserError, match=r"holds a run of another config \(optim.lr: 0.003 -> 0.01\); give it"):
        ensure_trained(small_cfg("train.max_steps=6", "optim.lr=0.01"), tmp_path / "run", dataset=small_dataset)


def test_train_resume_continues_with_the_runs_own_config_and_refuses_a_change(small_cfg, small_dataset, tmp_path):
    overrides = SMALL_DATA + TINY_MODEL + ["train.max_steps=12", "train.eval_every=6"]
    full, part = tmp_path / "full", tmp_path / "part"
    train(small_cfg("train.max_steps=12", "train.eval_every=6"), full, dataset=small_dataset)
    train(small_cfg("train.max_steps=12", "train.eval_every=6"), part, dataset=small_dataset, hooks=StopAt(6))
    r = run_cli("train", "--out", part, "--resume", "optim.lr=0.05")  # once it resumed, saying nothing
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"scalelab: error: {part} holds a run of another config (optim.lr: 0.003 -> 0.05); resume it with its "
        f"own config (scalelab train --out {part} --resume), or train this config into another --out"], r.stderr
    assert json.loads((part / "config.json").read_text())["optim"]["lr"] == 0.003  # nothing written
    r = run_cli("train", "--out", part, "--resume", "train.threads=1")  # no config given: the run's own
    assert r.returncode == 0, r.stderr
    assert RunDir(part).read_summary()["final"]["val_loss"] == RunDir(full).read_summary()["final"]["val_loss"]
    r = run_cli("train", *overrides, "--out", part)
    assert r.returncode == 2 and "--restart" in r.stderr
    r = run_cli("train", *overrides, "optim.lr=0.01", "--out", part, "--restart")
    assert r.returncode == 0 and RunDir(part).read_config().optim.lr == 0.01


def test_held_out_rows_stay_out_of_a_fit_unless_asked(tmp_path):
    df = pd.DataFrame({"run": ["a", "b", "c", "held"], "N": [1e6, 2e6, 4e6, 8e6], "D": [1e8, 2e8, 4e8, 8e8],
                       "loss": [3.0, 2.8, 2.6, 2.2], "holdout": [False, False, False, True]})
    t = load_table(df)
    assert len(t) == 3 and t.notes == ["left out 1 held-out row(s) (held): they check the forecast; "
                                       "--include-holdout fits them too"]
    assert len(load_table(df, include_holdout=True)) == 4
    p = tmp_path / "runs.csv"
    df.to_csv(p, index=False)  # as `ladder export` writes it: holdout as True/False text
    assert len(load_table(p)) == 3
