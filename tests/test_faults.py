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


# ---- damaged artifacts, full disks, killed writers, shared ladders (#19 items 3-5) ------------------

def _cli(capsys, *argv) -> tuple[int, str]:
    from scalelab.cli import main

    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


DAMAGED = {
    "fit file cut short": ("fit.json", b'{"form": "chinchilla", "params": {"E": 1.7'),
    "fit file missing a parameter": ("fit.json", b'{"form": "chinchilla", "params": {"E": 1.7, "A": 400.0}}'),
    "ensemble member with a NaN": ("fit.json", b'{"form": "ensemble", "params": {"members": [{"form": "kaplan", '
                                               b'"params": {"Nc": 1e13, "Dc": 1e13, "alpha_N": 0.07, '
                                               b'"alpha_D": NaN}}]}}'),
    "fit file of binary junk": ("fit.json", bytes(range(256))),
    "task forecast with a NaN": ("fit.json", b'{"kind": "task-forecast", "metric": "acc", "via": "x", "tasks": {"a": '
                                             b'{"metric": "acc", "via": "x", "step1": {"form": "chinchilla", "params": '
                                             b'{"E": NaN, "A": 1, "B": 1, "alpha": 0.3, "beta": 0.3}}, '
                                             b'"theta": [0, 0, 1], "theta_samples": [], "resid_sd": 0.01, '
                                             b'"n_points": 9}}}'),
    "config of binary junk": ("run.toml", b"\x00\x01\xff\xfe model"),
    "config cut short": ("run.toml", b"[model]\nd_model = "),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_artifact_is_one_line(tmp_path, capsys, case):
    name, content = DAMAGED[case]
    p = tmp_path / name
    p.write_bytes(content)
    argv = (["predict", p, "--params", "1e9", "--tokens", "2e10"] if name == "fit.json"
            else ["train", p, "--out", tmp_path / "run"])
    code, err = _cli(capsys, *argv)
    assert code == 2 and str(p) in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()  # nothing started


def test_a_torn_last_metrics_line_is_skipped_and_a_damaged_one_named(tmp_path):
    """A process killed while appending leaves a torn last line: the complete records before it are
    read; a damaged line in the middle is an error naming it, not a silently shorter run."""
    import json

    from scalelab.train.records import read_records

    lines = [json.dumps(_point(s).to_dict()) for s in (1, 2, 3)]
    p = tmp_path / "metrics.jsonl"
    p.write_text("\n".join(lines) + "\n" + lines[0][:17])
    assert [r.step for r in read_records(p)] == [1, 2, 3]
    p.write_text("\n".join([lines[0], lines[1][:20], lines[2]]) + "\n")
    with pytest.raises(UserError, match="line 2 is damaged"):
        read_records(p)


def test_a_full_disk_writing_a_result_keeps_the_old_one(tmp_path, capsys, monkeypatch, public):
    """ENOSPC while writing a fit: one line naming the file, the previous fit intact, no temporary left."""
    import os

    import scalelab.io

    public("chinchilla-epoch")
    out = tmp_path / "fit.json"
    assert _cli(capsys, "fit", "--example", "chinchilla", "--out", out, "--bootstrap", "0")[0] == 0
    before = out.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(scalelab.io.os, "fsync", full)
    code, err = _cli(capsys, "fit", "--example", "chinchilla", "--out", out, "--bootstrap", "0", "--form", "kaplan")
    assert code == 2 and f"cannot write {out}: the disk is full" in err and len(err.strip().splitlines()) == 1, err
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["fit.json"]


def _point(step):
    from scalelab.train.records import MetricsRecord

    return MetricsRecord(step=step, tokens=1024 * step, flops=1e9 * step, lr=1e-3, train_loss=5.0 / step,
                         val_loss=5.1 / step, val_bpb=1.0, tokens_per_s=1e4)


def test_a_full_store_keeps_every_committed_point(tmp_path):
    """SQLite reports a full disk (its page limit reached): the points committed before are all there,
    whole; the failed one is absent, not half-written; the error maps to one line naming the store."""
    import sqlite3

    from scalelab.cli import write_fault
    from scalelab.ladder.store import Store

    st = Store(tmp_path / "ladder.sqlite")
    st.add_planned([])
    st.conn.execute("INSERT INTO runs (name, spec) VALUES ('r', '{}')")
    n_pages = st.conn.execute("PRAGMA page_count").fetchone()[0]
    st.conn.execute(f"PRAGMA max_page_count = {n_pages + 2}")
    step = 0
    with pytest.raises(sqlite3.OperationalError) as e:
        for step in range(1, 10_000):
            st.add_point("r", _point(step))
    assert "cannot write the ladder store" in write_fault(e.value)
    st.close()
    st = Store(tmp_path / "ladder.sqlite")
    assert st.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    steps = [r.step for _, r in st.records("r")]
    assert steps == list(range(1, step)) and step > 1  # every committed point, none of the failed one
    assert all(r.val_loss == pytest.approx(5.1 / r.step) for _, r in st.records("r"))


KILLED_WRITER = """
import sys
from scalelab.ladder.store import Store
from test_faults import _point
st = Store(sys.argv[1])
st.conn.execute("INSERT OR IGNORE INTO runs (name, spec) VALUES ('r', '{}')")
step = 1
while True:
    st.add_point("r", _point(step))
    step += 1
"""


def test_a_store_writer_killed_mid_write_loses_nothing_committed(tmp_path):
    """SIGKILL a process streaming points into the store: the store opens, passes SQLite's integrity
    check, holds steps 1..k without a gap or a partial row, and a resumed writer continues it."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    from scalelab.ladder.store import Store

    db = tmp_path / "ladder.sqlite"
    p = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(db)], cwd=Path(__file__).parent,
                         env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parent)})
    deadline = time.monotonic() + 120
    while not db.exists() or Store(db).progress().get("r", 0) < 50:
        assert p.poll() is None and time.monotonic() < deadline, "the writer died or never reached 50 points"
        time.sleep(0.05)
    p.kill()
    p.wait()
    st = Store(db)
    assert st.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    steps = [r.step for _, r in st.records("r")]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 50
    assert all(r.val_loss == pytest.approx(5.1 / r.step) for _, r in st.records("r"))
    st.add_point("r", _point(len(steps) + 1))
    assert st.progress()["r"] == len(steps) + 1


def test_claims_one_holder_per_unit_and_a_dead_holder_is_taken_over(tmp_path):
    """Two claimants of one unit: the first wins, the second is told who holds it; when the holder's
    process is dead (same machine) or silent past the stale time (any machine), the unit is taken over."""
    import subprocess
    import sys

    from scalelab.ladder.store import Store

    a, b = Store(tmp_path / "s.sqlite"), Store(tmp_path / "s.sqlite")
    assert a.claim("u1", "A") is None
    held = b.claim("u1", "B")
    assert held is not None and held["owner"] == "A"
    assert b.claim("u2", "B") is None  # other units are free
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # a pid that is gone
    a.conn.execute("UPDATE claims SET pid = ? WHERE unit = 'u1'", (p.pid,))
    assert b.claim("u1", "B") is None and a.claim("u1", "A")["owner"] == "B"
    assert a.claim("u2", "A", stale_s=0.0) is None  # B fell silent: taken over
    a.release("u1", "A")  # releasing what another holds changes nothing
    assert {c["unit"]: c["owner"] for c in a.claims()} == {"u1": "B", "u2": "A"}


@pytest.mark.slow
def test_two_shared_ladder_runs_split_the_ladder(tmp_path):
    """Two `ladder run --share` processes on one folder: every rung is trained exactly once, by one of
    them, and the finished ladder equals a ladder run alone (same final losses)."""
    import subprocess
    import sys
    from pathlib import Path

    from scalelab.ladder.store import Store
    from test_ladder import tiny_spec

    spec, lad = tiny_spec(tmp_path), tmp_path / "lad"
    exe = Path(sys.executable).parent / "scalelab"
    procs = [subprocess.Popen([str(exe), "ladder", "run", str(spec), "--out", str(lad), "--share"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    finished = [[ln.split("finished ")[1] for ln in o.splitlines() if "finished " in ln] for o, _ in outs]
    st = Store(lad / "ladder.sqlite")
    runs = st.runs()
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in runs)  # none trained twice
    # each run trained by exactly one of them (which one, and whether both got work, is timing: a fast
    # machine may let the first process finish a 4-run ladder before the second one starts)
    assert sorted(finished[0] + finished[1]) == sorted(r["name"] for r in runs), finished
    assert st.claims() == []
    alone = tmp_path / "alone"
    assert run_cli("ladder", "run", spec, "--out", alone).returncode == 0
    ref = {r["name"]: r["final_loss"] for r in Store(alone / "ladder.sqlite").runs()}
    assert {r["name"]: r["final_loss"] for r in runs} == pytest.approx(ref, rel=1e-6)


BUILD = """
import sys
from scalelab.data.shards import DataSpec, build_dataset
build_dataset(DataSpec(corpus=sys.argv[1], vocab_size=400, shard_tokens=20_000), root=sys.argv[2], log=lambda *a: None)
"""


@pytest.mark.slow
def test_a_dataset_build_killed_mid_way_is_never_taken_as_complete(tmp_path):
    """SIGKILL the build while the tokenizer trains and while shards are written: the dataset is absent
    (never half there), the next build removes the killed builds' hidden folders, and its shards
    equal an uninterrupted build's byte for byte."""
    import json
    import random
    import subprocess
    import sys
    import time

    from scalelab.data.shards import DataSpec, build_dataset

    corpus = tmp_path / "c.jsonl"
    rng = random.Random(0)
    words = [f"w{i}" for i in range(3000)]
    corpus.write_text("".join(json.dumps({"text": " ".join(rng.choices(words, k=300))}) + "\n" for _ in range(3000)))
    spec = DataSpec(corpus=str(corpus), vocab_size=400, shard_tokens=20_000)
    root = tmp_path / "cache"
    ref = build_dataset(spec, root=tmp_path / "ref", log=lambda *a: None)
    for stage in ("started", "tokenizer.json"):  # kill when the build folder appears / once shards are being written
        p = subprocess.Popen([sys.executable, "-c", BUILD, str(corpus), str(root)])
        while not [d for d in root.glob(".build-*") if stage == "started" or (d / stage).exists()]:
            assert p.poll() is None, "the build finished before it could be killed"
            time.sleep(0.01)
        p.kill()
        p.wait()
        assert not (root / ref.name).exists()
    assert len(list(root.glob(".build-*"))) == 1  # the second build removed the first one's folder
    out = build_dataset(spec, root=root, log=lambda *a: None)
    assert not list(root.glob(".build-*"))
    for f in sorted(ref.glob("*.bin")):
        assert (out / f.name).read_bytes() == f.read_bytes()


def _open_store(path, q):
    from scalelab.ladder.store import Store

    try:
        Store(path).close()
        q.put("")
    except Exception as e:  # noqa: BLE001 -- reported to the parent
        q.put(repr(e))


def test_processes_creating_one_store_at_once_all_succeed(tmp_path):
    """`ladder run --share` started twice at once: both create the same new store. Creating the tables
    and adding the newer columns is one transaction (before: 'duplicate column name' in half the
    trials with three processes)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    errors = []
    for t in range(20):
        q, path = ctx.Queue(), tmp_path / f"s{t}" / "ladder.sqlite"
        procs = [ctx.Process(target=_open_store, args=(path, q)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        errors += [e for e in (q.get() for _ in procs) if e]
    assert errors == []
