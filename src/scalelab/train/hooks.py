"""`Hooks`: callbacks into the training loop (torch-free, so callers need not import the loop)."""

from __future__ import annotations


class Hooks:
    """The defaults do nothing. Subclass and override what you need."""

    def on_record(self, rec) -> None:
        """Every `MetricsRecord`, as it is written (rank 0 only). The ladder streams them into its store."""

    def stop_after(self, step: int) -> bool:
        """True ends the run after ``step`` with a checkpoint, as a kill would (resume continues it)."""
        return False

    def close(self) -> None:
        """The run has stopped (finished, stopped early or failed): release files and connections."""


class Chain(Hooks):
    """Several hooks as one: every record to each, and the run stops when any of them says so."""

    def __init__(self, *hooks: Hooks):
        self.hooks = hooks

    def on_record(self, rec) -> None:
        for h in self.hooks:
            h.on_record(rec)

    def stop_after(self, step: int) -> bool:
        return any(h.stop_after(step) for h in self.hooks)

    def close(self) -> None:
        for h in self.hooks:
            h.close()


class StopAt(Hooks):
    """Stop after a given step: a run "killed" at a known point (tests, and tools that stage a run)."""

    def __init__(self, step: int):
        self.step = step

    def stop_after(self, step: int) -> bool:
        return step >= self.step
