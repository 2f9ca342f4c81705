"""Terminal output helpers: a console wide enough for our tables even when piped."""

from __future__ import annotations

import sys


def console():
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=150)


class ByteProgress:
    """A progress bar over bytes of text (tokenizing a corpus) on a terminal's stderr; silent otherwise.
    ``total`` may be None (a streamed corpus of unknown size: the bar shows bytes and speed only)."""

    def __init__(self, description: str, total: float | None):
        self.p = None
        if not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self.task = self.p.add_task(description, total=total)

    def __enter__(self):
        if self.p is not None:
            self.p.start()
        return self

    def advance(self, n_bytes: int) -> None:
        if self.p is not None:
            self.p.advance(self.task, n_bytes)

    def __exit__(self, *exc):
        if self.p is not None:
            self.p.stop()
