"""Runs trained anywhere, read from the files their trackers wrote (`scalelab ladder import`).

Every reader returns `RunLog`s: a run's logged series (key -> {step: value}), the model config found beside
it (a Hugging Face or scalelab config.json, or one the tracker logged) and its flat hyperparameters. Which
reader a path needs is found from what it holds (`discover`), or named with ``--source``:

    hf           a Hugging Face Trainer output folder: trainer_state.json's log_history, config.json
    tensorboard  a folder of TensorBoard event files (read with tensorboard's own EventAccumulator)
    wandb        a W&B offline run folder (wandb/offline-run-*: its .wandb log, parsed with wandb's protobuf)
    mlflow       an MLflow tracking store (a SQLite file, a folder holding mlflow.db, or a URI), every run
    table        a CSV or JSONL log, with ``--map`` naming its columns (step=iter,loss=train/loss,...)
"""

from __future__ import annotations

from pathlib import Path

from scalelab.errors import UserError
from scalelab.ladder.sources import readers, stores
from scalelab.ladder.sources.runlog import RunLog

SOURCES = ("hf", "tensorboard", "wandb", "mlflow", "table")
__all__ = ["SOURCES", "RunLog", "discover", "kind_of", "read"]


def _events(d: Path) -> bool:
    """Event files in the run's folder, its tensorboard/ folder (scalelab) or runs/<date>/ (a Trainer)."""
    return any(d.glob("events.out.tfevents.*")) or any(d.glob("tensorboard/events.out.tfevents.*")) or \
        any(d.glob("runs/*/events.out.tfevents.*"))


def _wandb(d: Path) -> bool:
    return any(d.glob("*.wandb")) or any(d.glob("wandb/*run-*/*.wandb"))


def kind_of(d: Path) -> str | None:
    """The reader a folder needs, or None when it is not one run (it may hold runs)."""
    if d.is_file():
        if d.suffix in (".csv", ".jsonl", ".json"):
            return "table"
        if d.suffix == ".db":
            return "mlflow"
        return None
    if (d / "trainer_state.json").exists() or any(d.glob("checkpoint-*/trainer_state.json")):
        return "hf"
    if _events(d):
        return "tensorboard"
    if _wandb(d):
        return "wandb"
    if (d / "mlflow.db").exists():
        return "mlflow"
    return None


def discover(paths: list[str], source: str | None = None) -> list[tuple[str, str]]:
    """(reader, path) for each run PATH, each run folder inside a folder of runs, or each store."""
    out = []
    for p in paths:
        if "://" in p:  # an MLflow tracking URI
            out.append(("mlflow", p))
            continue
        path = Path(p)
        if not path.exists():
            raise UserError(f"{p} does not exist")
        kind = kind_of(path)
        if kind:  # one run (or a store): read it as --source says, else as what it holds
            out.append((source or kind, p))
            continue
        inner = [(source or kind_of(c), str(c)) for c in sorted(path.iterdir()) if c.is_dir() and kind_of(c)]
        if not inner:
            raise UserError(f"{p}: no run found (no trainer_state.json, TensorBoard events, W&B run, MLflow store, "
                            f"nor folders of them); name the kind with --source {'|'.join(SOURCES)}")
        out += inner
    return out


def read(kind: str, path: str, mapping: dict[str, str] | None = None) -> list[RunLog]:
    fn = {"hf": readers.read_hf, "tensorboard": readers.read_tensorboard, "table": readers.read_table,
          "wandb": stores.read_wandb, "mlflow": stores.read_mlflow}.get(kind)
    if fn is None:
        raise UserError(f"--source must be one of {', '.join(SOURCES)}, got {kind!r}")
    return fn(path, mapping) if kind == "table" else fn(path)
