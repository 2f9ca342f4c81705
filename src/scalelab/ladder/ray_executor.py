"""The Ray executor: the same ladder, its units spread over a Ray cluster.

    scalelab ladder run LADDER.toml --out OUT --executor ray [--address auto|ray://host:port]

* Each work unit (a rung; a WSD group) is one Ray task with resources derived from its size:
  ``num_cpus`` = the ladder's threads per run; ``num_gpus`` = 0 on a CPU cluster, else a quarter
  of a GPU for models under 50M parameters and a whole GPU above.
* The driver is the store's only writer: tasks stream their metrics records through a Ray queue, the
  driver writes them into ``OUT/ladder.sqlite`` as they arrive (so `ladder status` shows progress
  while tasks run), and marks a rung done when its task returns its summary.
* Run directories (checkpoints) live under ``--shared-dir`` (default ``OUT``), a path every worker
  must see. A task whose worker dies is retried by Ray (``max_retries``) and resumes from the rung's
  last checkpoint; points are keyed by (run, step) and runs by name, so nothing is counted twice.
* Without ``--address`` a local Ray instance is started (and stopped at the end).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from scalelab.errors import UserError
from scalelab.ladder.executors import branch_plan, ladder_lock, prepare, train_rung, work_units
from scalelab.ladder.plan import LadderSpec, Rung
from scalelab.train.data import load_dataset
from scalelab.train.hooks import Hooks
from scalelab.train.rundir import RunDir

GPU_FRACTION_BELOW = 50e6  # parameters: rungs smaller than this share a GPU four ways


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError("executor ray needs Ray: pip install 'scalelab[ray]'", arg="executor") from None
    return ray


def resources(spec: LadderSpec, unit: list[Rung], cluster_gpus: float) -> dict:
    n = max(r.N for r in unit)
    gpus = 0.0 if cluster_gpus <= 0 else (0.25 if n < GPU_FRACTION_BELOW else 1.0)
    return {"num_cpus": max(1, spec.threads), "num_gpus": gpus}


class QueueRecords(Hooks):
    """Streams a run's metrics records to the driver through a Ray queue (the driver writes the store)."""

    def __init__(self, queue, name: str):
        self.queue, self.name = queue, name

    def on_record(self, rec) -> None:
        self.queue.put(("point", self.name, rec))


def _train_unit(spec: LadderSpec, unit: list[Rung], root: str, done: list[str], queue) -> list[dict]:
    """Runs on a worker: train the unit's rungs (resuming from checkpoints), stream metrics to ``queue``."""
    if spec.threads > 0:
        torch.set_num_threads(spec.threads)
    out = []
    for rung, branch_from, keep in branch_plan(unit, Path(root)):
        if rung.name in done:
            continue
        t0 = time.time()
        queue.put(("running", rung.name, str(RunDir.under(root, rung.name).path), os.getpid()))
        summary = train_rung(spec, rung, Path(root), QueueRecords(queue, rung.name), branch_from, keep)
        out.append({"name": rung.name, "final": summary["final"], "flops": summary["flops"],
                    "seconds": time.time() - t0, "resumed_from_step": summary.get("resumed_from_step", 0)})
    return out


def _drain(queue, store) -> None:
    """Write what the tasks queued (records, "running" marks) into the store: the driver is its only writer."""
    from ray.util.queue import Empty

    while True:
        try:
            msg = queue.get_nowait()
        except Empty:
            return
        if msg[0] == "point":
            store.add_point(msg[1], msg[2])
        elif msg[0] == "running":
            store.mark_running(msg[1], msg[2])


def run_ladder_ray(spec: LadderSpec, out_dir: str | Path, address: str | None = None, rungs: list[Rung] | None = None,
                   shared_dir: str | Path | None = None, max_retries: int = 3, progress=None,
                   num_cpus: int | None = None) -> list[dict]:
    """Run (or resume) the ladder on Ray; returns the units' results (each rung's final record)."""
    ray = _ray()
    from ray.util.queue import Queue

    out = Path(out_dir)
    with ladder_lock(out):
        return _run_on_ray(ray, Queue, spec, out, address, rungs, shared_dir, max_retries, progress, num_cpus)


def _run_on_ray(ray, Queue, spec: LadderSpec, out: Path, address, rungs, shared_dir, max_retries: int, progress,
                num_cpus) -> list[dict]:
    store, rungs = prepare(spec, out, rungs)
    root = Path(shared_dir) if shared_dir else out
    load_dataset(rungs[0].config, log=lambda *a: None)  # tokenize once, before any task starts
    started = not ray.is_initialized()
    if started:
        kw = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
        ray.init(**kw, log_to_driver=False, ignore_reinit_error=True)
    try:
        done = {r["name"] for r in store.runs("done")}
        units = [u for u in work_units(rungs, spec.strategy) if any(r.name not in done for r in u)]
        gpus = ray.cluster_resources().get("GPU", 0)
        queue = Queue()
        task = ray.remote(_train_unit)
        pending = {task.options(max_retries=max_retries, retry_exceptions=False, name=f"scalelab:{u[0].name}",
                                **resources(spec, u, gpus)).remote(spec, u, str(root), sorted(done), queue): u
                   for u in units}
        results, finished = [], len(done)
        if progress:
            progress(finished, len(rungs), None)

        while pending:
            ready, _ = ray.wait(list(pending), timeout=0.5)
            _drain(queue, store)
            for ref in ready:
                unit = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except ray.exceptions.RayError as e:
                    for r in unit:
                        if r.name not in done:
                            store.mark_failed(r.name, str(e).strip().splitlines()[-1][:500])
                    raise UserError(f"rung {unit[0].name} failed on Ray after {max_retries} retries; "
                                    f"see `scalelab ladder status {out}`") from None
                _drain(queue, store)
                for r in res:
                    store.mark_done(r["name"], r["final"], r["flops"], r["seconds"])
                    finished += 1
                    if progress:
                        progress(finished, len(rungs), r["name"])
                results.extend(res)
        return results
    finally:
        store.close()
        if started:
            ray.shutdown()


def worker_pids_of(name_prefix: str = "scalelab:") -> list[int]:
    """PIDs of Ray worker processes currently running a scalelab task (for tests and operators)."""
    import psutil

    pids = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::") and ("_train_unit" in cmd or name_prefix in cmd):
            pids.append(p.info["pid"])
    return pids
