"""Running a ladder: the local executor (one run after another, or N at a time in processes).

Every rung trains in ``OUT/runs/<name>/`` with its resolved config, metrics and checkpoints; the store
(``OUT/ladder.sqlite``) is the record. Re-running a killed ladder skips `done` runs, and resumes the
others from their last checkpoint (exactly, on CPU), so nothing finished is lost or counted twice.

WSD harvest (Hägele et al. 2024): the rungs of one shape form a group. Its largest rung is trained
once with a warmup-stable-decay schedule, keeping a checkpoint where each smaller rung's cooldown
starts; each smaller rung is then a short branch from that checkpoint, cooling down to its own
token count. One group yields k (N, D) points for about the cost of its largest.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import time
import traceback
import uuid
from collections import defaultdict
from pathlib import Path

import torch

from scalelab.errors import UserError
from scalelab.io import hold_lock
from scalelab.ladder.plan import LadderSpec, Rung, plan, with_threads
from scalelab.ladder.store import Store
from scalelab.provenance import environment
from scalelab.train.data import load_dataset
from scalelab.train.hooks import Hooks
from scalelab.train.rundir import RunDir
from scalelab.train.runner import ensure_trained
from scalelab.train.tracking import prepare_mlflow


def store_path(out_dir: Path) -> Path:
    return Path(out_dir) / "ladder.sqlite"


def prepare(spec: LadderSpec, out_dir: str | Path, rungs: list[Rung] | None = None) -> tuple[Store, list[Rung]]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(store_path(out))
    rungs = plan(spec) if rungs is None else rungs
    saved = store.get_meta("spec")
    free = ("threads", "loggers")  # how a ladder runs and is watched, not what it measures
    comparable = {k: v for k, v in json.loads(json.dumps(spec.to_dict())).items() if k not in free}
    if saved is not None:  # keys added to LadderSpec (and its sections) since the store was written: defaults
        default = json.loads(json.dumps(LadderSpec().to_dict()))
        saved = {**default, **{k: {**default[k], **v} if isinstance(v, dict) and isinstance(default.get(k), dict)
                               else v for k, v in saved.items()}}
    if saved is not None and {k: v for k, v in saved.items() if k not in free} != comparable:
        raise UserError(f"out: {out} holds a different ladder; use another directory or the ladder file it was "
                        "run with", arg="out")
    store.set_meta("spec", spec.to_dict())
    store.set_meta("environment", environment())  # of the newest start (each run's summary has its own)
    store.add_planned(rungs)
    return store, rungs


class StoreRecords(Hooks):
    """Streams a run's metrics records into the ladder store as they are written; under `--share`
    each record also renews this process's claim on its unit (at most every `BEAT_SECONDS`)."""

    def __init__(self, store: Store, name: str, claim: tuple[str, str] | None = None):
        self.store, self.name, self.claim, self.beat = store, name, claim, time.time()

    def on_record(self, rec) -> None:
        self.store.add_point(self.name, rec)
        if self.claim is not None and time.time() - self.beat > BEAT_SECONDS:
            self.store.heartbeat(*self.claim)
            self.beat = time.time()


BEAT_SECONDS = 30.0


def branch_plan(unit: list[Rung], out: Path) -> list[tuple[Rung, Path | None, tuple[int, ...]]]:
    """(rung, branch point it starts from, steps whose checkpoints it keeps) for each rung of a unit.

    A WSD unit is a shape group, largest rung first: that main run keeps a checkpoint at each other
    rung's cooldown start, and each other rung starts from its own. Any other unit trains plainly."""
    if len(unit) == 1 or unit[0].decay_start is None:
        return [(r, None, ()) for r in unit]
    main, branches = unit[0], unit[1:]
    main_run = RunDir.under(out, main.name)
    return [(main, None, tuple(b.decay_start for b in branches))] + \
        [(b, main_run.branch_point(b.decay_start), ()) for b in branches]


def train_rung(spec: LadderSpec, rung: Rung, out: Path, hooks=None, branch_from=None, branch_points=()) -> dict:
    """Train (or reuse, or resume) one rung in OUT/runs/<name> through `ensure_trained`."""
    return ensure_trained(with_threads(rung.config, spec.threads), RunDir.under(out, rung.name), hooks=hooks,
                          branch_from=branch_from, branch_points=branch_points)


def work_units(rungs: list[Rung], strategy: str) -> list[list[Rung]]:
    """Cosine: one rung per unit. WSD: one unit per shape group, largest rung first."""
    if strategy != "wsd":
        return [[r] for r in rungs]
    groups = defaultdict(list)
    for r in rungs:
        groups[r.group].append(r)
    return [sorted(g, key=lambda r: -r.steps) for g in groups.values()]


def _run_unit(spec: LadderSpec, rungs: list[Rung], out: Path, owner: str | None = None) -> list[str]:
    """Run one unit (in this or a worker process). Returns the names it trained; under `--share`
    (``owner`` given) none when another live process holds the unit's claim or has finished it."""
    if spec.threads > 0:
        torch.set_num_threads(spec.threads)
    store = Store(store_path(out))
    claim = None if owner is None else (rungs[0].name, owner)
    if claim is not None and store.claim(*claim) is not None:
        store.close()
        return []
    done_names = {r["name"] for r in store.runs("done")}  # read after the claim: another may have finished it
    finished = []
    try:
        for rung, branch_from, keep in branch_plan(rungs, out):
            if rung.name not in done_names:
                store.mark_running(rung.name, str(RunDir.under(out, rung.name).path))
                t0 = time.time()
                summary = train_rung(spec, rung, out, StoreRecords(store, rung.name, claim), branch_from, keep)
                store.mark_done(rung.name, summary["final"], summary["flops"], time.time() - t0)
            finished.append(rung.name)
        return [n for n in finished if n not in done_names]  # those trained now
    except Exception as e:  # record why the unit failed in the store, then let it propagate
        for r in rungs:
            if r.name not in finished:
                store.mark_failed(r.name, "".join(traceback.format_exception_only(type(e), e)).strip())
        raise
    finally:
        if claim is not None:
            store.release(*claim)
        store.close()


def run_ladder(spec: LadderSpec, out_dir: str | Path, parallel: int = 1, rungs: list[Rung] | None = None,
               progress=None, only: list[str] | None = None, share: bool = False) -> Store:
    """Run (or resume) every rung (or those named in ``only``); returns the store.
    ``progress(done, total, name)`` is called after each unit. ``spec.threads`` may differ between
    invocations (it changes speed, not results). ``share``: other `--share` processes, here or on other
    machines with the folder on a shared filesystem, may run the same ladder; each unit of work is
    claimed through the store first, so none is trained twice, and this call returns when no unit is
    left to claim (some may still be in other hands: `Store.claims`)."""
    out = Path(out_dir)
    with ladder_lock(out, shared=share):
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}" if share else None
        return _run_ladder(spec, out, parallel, rungs, progress, only, owner)


def ladder_lock(out: Path, shared: bool = False):
    """One `ladder run` per folder at a time (the driver holds OUT/ladder.lock; a killed one's is freed),
    or any number that all `--share` it."""
    return hold_lock(out / "ladder.lock", f"ladder {out}", shared=shared)


def _run_ladder(spec: LadderSpec, out: Path, parallel: int, rungs, progress, only, owner=None) -> Store:
    store, rungs = prepare(spec, out, rungs)
    load_dataset(rungs[0].config, log=lambda *a: None)  # tokenize once, before any worker starts
    if "mlflow" in spec.loggers and parallel > 1:  # MLflow's SQLite migrations race: make the store first
        prepare_mlflow(out)
    done = {r["name"] for r in store.runs("done")}
    todo = rungs if only is None else [r for r in rungs if r.name in only]
    units = [u for u in work_units(todo, spec.strategy) if any(r.name not in done for r in u)]
    total = len(rungs)
    if progress:
        progress(len(done), total, None)
    args = [(spec, u, out, owner) for u in units]

    def report(names: list[str]) -> None:
        if progress and names:  # no names: another --share process holds or finished that unit
            progress(len(store.runs("done")), total, names[-1])  # every process's, under --share

    if parallel <= 1 or len(units) <= 1:
        for a in args:
            report(_star(a))
    else:
        with mp.get_context("spawn").Pool(parallel) as pool:
            for names in pool.imap_unordered(_star, args):
                report(names)
    return store


def _star(a):
    return _run_unit(*a)
