"""`RunDir`: every path of one run, in one place. No other module builds these paths.

    RUN/config.json                    the resolved RunConfig: retrains this run from scratch
    RUN/tokenizer.json                 the tokenizer the run trained with
    RUN/metrics.jsonl                  one `MetricsRecord` per logged step
    RUN/summary.json                   written last, once the run is complete
    RUN/checkpoints/step_NNNNNNNN/     weights, optimizer, state.json (see checkpoint.py)
    RUN/checkpoints/LATEST             name of the newest complete checkpoint
    RUN/branch_points/step_NNNNNNNN/   kept copies where WSD cooldown branches (and labs) start

Torch-free: the ladder, the report and the CLI read runs without importing torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from scalelab.config import load_dict
from scalelab.errors import UserError
from scalelab.io import atomic_write_json, read_json
from scalelab.train.records import read_records


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:  # usable wherever a path is
        return str(self.path)

    @classmethod
    def under(cls, root: str | Path, name: str) -> RunDir:
        """Run ``name`` of a ladder or lab directory: ROOT/runs/NAME."""
        return cls(Path(root) / "runs" / name)

    @classmethod
    def of(cls, run: RunDir | str | Path) -> RunDir:
        return run if isinstance(run, RunDir) else cls(run)

    # ---- paths ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def tokenizer_file(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_file(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / checkpoint_name(step)

    def branch_point(self, step: int) -> Path:
        return self.path / "branch_points" / checkpoint_name(step)

    # ---- state ---------------------------------------------------------------------------
    def is_complete(self) -> bool:
        return self.summary_file.exists()

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint LATEST names, else the newest complete one, else None."""
        marker = self.checkpoints / "LATEST"
        if marker.exists():
            p = self.checkpoints / marker.read_text().strip()
            if (p / "state.json").exists():
                return p
        done = sorted(p for p in self.checkpoints.glob("step_*") if (p / "state.json").exists())
        return done[-1] if done else None

    # ---- reading and writing -------------------------------------------------------------
    def read_config(self):
        """The run's RunConfig (strictly parsed, as `scalelab train` would)."""
        if not self.config_file.exists():
            raise UserError(f"{self.path} is not a scalelab run directory (no config.json)")
        return load_dict(read_json(self.config_file, "run config"))

    def write_config(self, cfg) -> None:
        atomic_write_json(self.config_file, cfg.to_dict())

    def read_summary(self) -> dict:
        return read_json(self.summary_file, "run summary")

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary_file, summary)

    def read_metrics(self) -> list:
        """Every `MetricsRecord` of the run, in step order."""
        return read_records(self.metrics_file)

    def summary_or_none(self) -> dict | None:
        try:
            return json.loads(self.summary_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
