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
import time
import traceback
from collections import defaultdict
from pathlib import Path

from scalelab.errors import UserError
from scalelab.ladder.plan import LadderSpec, Rung, plan, rung_overrides
from scalelab.ladder.store import Store


def store_path(out_dir: Path) -> Path:
    return Path(out_dir) / "ladder.sqlite"


def prepare(spec: LadderSpec, out_dir: str | Path, rungs: list[Rung] | None = None) -> tuple[Store, list[Rung]]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(store_path(out))
    rungs = plan(spec) if rungs is None else rungs
    saved = store.get_meta("spec")
    comparable = {k: v for k, v in json.loads(json.dumps(spec.to_dict())).items() if k != "threads"}
    if saved is not None and {k: v for k, v in saved.items() if k != "threads"} != comparable:
        raise UserError(f"{out} holds a different ladder; use another --out or the ladder file it was run with")
    store.set_meta("spec", spec.to_dict())
    store.add_planned(rungs)
    return store, rungs


def _config(spec: LadderSpec, rung: Rung):
    from scalelab.config import load_dict

    return load_dict(rung_overrides(spec, rung))


def _train_rung(spec: LadderSpec, rung: Rung, out: Path, store: Store, save_at=(), seed_ckpt: Path | None = None):
    from scalelab.train.checkpoint import latest_checkpoint, seed_from
    from scalelab.train.loop import train

    run_dir = out / "runs" / rung.name
    summary_file = run_dir / "summary.json"
    store.mark_running(rung.name, str(run_dir))
    t0 = time.time()
    if summary_file.exists():  # trained, but killed before the store heard of it
        summary = json.loads(summary_file.read_text())
    else:
        if seed_ckpt is not None and latest_checkpoint(run_dir) is None:
            seed_from(seed_ckpt, run_dir)
        summary = train(_config(spec, rung), run_dir, resume=True, console=_Quiet(),
                        on_log=lambda rec: store.add_point(rung.name, rec), decay_start=rung.decay_start,
                        save_at=tuple(save_at))
    store.mark_done(rung.name, summary["final"], summary["flops"], time.time() - t0)
    return summary


class _Quiet:
    """A console that swallows the loop's messages (the ladder shows its own progress)."""

    def log(self, *a, **k):
        pass


def _work_units(rungs: list[Rung], strategy: str) -> list[list[Rung]]:
    """Cosine: one rung per unit. WSD: one unit per shape group, largest rung first."""
    if strategy != "wsd":
        return [[r] for r in rungs]
    groups = defaultdict(list)
    for r in rungs:
        groups[r.group].append(r)
    return [sorted(g, key=lambda r: -r.steps) for g in groups.values()]


def _run_unit(spec: LadderSpec, rungs: list[Rung], out: Path) -> list[str]:
    """Run one unit (in this or a worker process). Returns the names it finished."""
    import torch

    if spec.threads > 0:
        torch.set_num_threads(spec.threads)
    store = Store(store_path(out))
    done_names = {r["name"] for r in store.runs("done")}
    finished = []
    try:
        if len(rungs) == 1 or spec.strategy != "wsd":
            for r in rungs:
                if r.name not in done_names:
                    _train_rung(spec, r, out, store)
                finished.append(r.name)
            return finished
        main, branches = rungs[0], rungs[1:]
        main_dir = out / "runs" / main.name
        save_at = [b.decay_start for b in branches]
        if main.name not in done_names:
            _train_rung(spec, main, out, store, save_at=save_at)
        finished.append(main.name)
        for b in branches:
            if b.name not in done_names:
                ck = main_dir / "branch_points" / f"step_{b.decay_start:08d}"
                if not ck.exists():
                    raise RuntimeError(f"missing branch point {ck} for {b.name}")
                _train_rung(spec, b, out, store, seed_ckpt=ck)
            finished.append(b.name)
        return finished
    except Exception as e:
        for r in rungs:
            if r.name not in finished:
                store.mark_failed(r.name, "".join(traceback.format_exception_only(type(e), e)).strip())
        raise
    finally:
        store.close()


def run_ladder(spec: LadderSpec, out_dir: str | Path, parallel: int = 1, rungs: list[Rung] | None = None,
               progress=None, only: list[str] | None = None) -> Store:
    """Run (or resume) every rung (or those named in ``only``); returns the store.
    ``progress(done, total, name)`` is called after each unit. ``spec.threads`` may differ between
    invocations (it changes speed, not results)."""
    from scalelab.train.loop import load_dataset

    out = Path(out_dir)
    store, rungs = prepare(spec, out, rungs)
    load_dataset(_config(spec, rungs[0]), log=lambda *a: None)  # tokenize once, before any worker starts
    done = {r["name"] for r in store.runs("done")}
    todo = rungs if only is None else [r for r in rungs if r.name in only]
    units = [u for u in _work_units(todo, spec.strategy) if any(r.name not in done for r in u)]
    total, finished = len(rungs), len(done)
    if progress:
        progress(finished, total, None)
    args = [(spec, u, out) for u in units]
    if parallel <= 1 or len(units) <= 1:
        for a in args:
            names = _run_unit(*a)
            finished += len([n for n in names if n not in done])
            if progress:
                progress(finished, total, names[-1])
    else:
        with mp.get_context("spawn").Pool(parallel) as pool:
            for names in pool.imap_unordered(_star, args):
                finished += len([n for n in names if n not in done])
                if progress:
                    progress(finished, total, names[-1])
    return store


def _star(a):
    return _run_unit(*a)
