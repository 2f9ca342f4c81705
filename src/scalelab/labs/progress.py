"""One progress bar over a whole lab, in planned training FLOPs.

A lab declares its runs before it trains them (`LabProgress(out, {name: RunConfig})`); a thread reads
each run's newest record (DIR/runs/<name>/metrics.jsonl) every second, so the bar moves with the
exact FLOPs trained, a run 10x larger moves it 10x further, and runs reused from an earlier start count
as done at once. The ETA is over training only: a lab's evaluations between runs stretch it.
Shown on a terminal only; the per-model bars are switched off while it is (`active()`)."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from scalelab.config import RunConfig
from scalelab.train.rundir import RunDir

_active = threading.Event()


def active() -> bool:
    """Whether a lab's bar is showing (a run inside it then shows none of its own)."""
    return _active.is_set()


def planned_flops(cfg: RunConfig) -> float:
    """The exact training FLOPs of the whole run: its steps' tokens x FLOPs per token."""
    return float(cfg.total_steps * cfg.train.tokens_per_step * cfg.model.flops_per_token_exact(cfg.train.seq_len))


def trained_flops(run: RunDir) -> float:
    """FLOPs of a run's newest record (0 before its first): the last line of metrics.jsonl, read from the end."""
    path = run.path / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().splitlines()
    except OSError:
        return 0.0
    for line in reversed(lines):
        try:
            return float(json.loads(line)["flops"])
        except (ValueError, KeyError):  # a line cut by the seek or by a write in progress
            continue
    return 0.0


class LabProgress:
    """``with LabProgress(out, {name: cfg}, "emergence lab"):`` around a lab's training (a no-op off a terminal)."""

    def __init__(self, out: str | Path, runs: dict[str, RunConfig], description: str, show: bool | None = None):
        self.runs = {name: RunDir.under(out, name) for name in runs}
        self.total = sum(planned_flops(cfg) for cfg in runs.values())
        self.show = (sys.stdout.isatty() if show is None else show) and not active() and self.total > 0
        self.description = description
        self._stop = threading.Event()

    def done(self) -> float:
        return sum(trained_flops(run) for run in self.runs.values())

    def _poll(self):
        while not self._stop.wait(1.0):
            self.prog.update(self.task, completed=min(self.done(), self.total))

    def __enter__(self):
        if not self.show:
            return self
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                             TextColumn("{task.percentage:>3.0f}% of {task.total:.3g} training FLOPs"),
                             TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        self.task = self.prog.add_task(self.description, total=self.total, completed=min(self.done(), self.total))
        self.prog.start()
        _active.set()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if not self.show:
            return
        self._stop.set()
        self.thread.join()
        _active.clear()
        self.prog.update(self.task, completed=min(self.done(), self.total))
        self.prog.stop()
