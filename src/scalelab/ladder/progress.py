"""One progress bar for a ladder (or the demo), in planned FLOPs, fed by polling the store: runs in
worker processes, on Ray, or in other `--share` processes all count, and the ETA is FLOP-weighted
(a run 10x larger moves the bar 10x further)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from scalelab.economics.flops import train_flops_6nd
from scalelab.ladder.plan import Rung
from scalelab.ladder.store import Store


def done_flops(store: Store, params: dict[str, int]) -> float:
    """C = 6 N D of the tokens every run has trained so far (its newest record), over the runs in ``params``."""
    return sum(train_flops_6nd(params.get(row["run"], 0), row["t"] or 0)
               for row in store.conn.execute("SELECT run, MAX(tokens) AS t FROM points GROUP BY run"))


class FlopsProgress:
    """A rich progress bar over ``rungs``' planned FLOPs (plus ``extra_flops`` planned later: `add`)."""

    def __init__(self, store_path: Path, rungs: list[Rung], extra_flops: float = 0.0, description: str = "ladder"):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.path, self.N = Path(store_path), {r.name: r.N for r in rungs}
        self.prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                             TextColumn("{task.percentage:>3.0f}% of {task.total:.3g} FLOPs"),
                             TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False)
        self.task = self.prog.add_task(description, total=sum(r.C for r in rungs) + extra_flops)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    @property
    def console(self):
        """Print through this (lines appear above the bar)."""
        return self.prog.console

    def add(self, rungs: list[Rung]) -> None:
        self.N.update({r.name: r.N for r in rungs})

    def _poll(self):
        while not self._stop.wait(1.0):
            try:
                store = Store(self.path)
                done = done_flops(store, self.N)
                store.close()
                self.prog.update(self.task, completed=done)
            except sqlite3.Error:  # the store is not created yet, or busy: try again next second
                continue

    def __enter__(self):
        self.prog.start()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        if exc[0] is None:
            self.prog.update(self.task, completed=self.prog.tasks[0].total)
        self.prog.stop()
