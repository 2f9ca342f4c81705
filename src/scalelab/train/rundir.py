"""`RunDir`: every path of one run, in one place. No other module builds these paths.

    RUN/config.json                    the resolved RunConfig: retrains this run from scratch
    RUN/tokenizer.json                 the tokenizer the run trained with
    RUN/metrics.jsonl                  one `MetricsRecord` per logged step
    RUN/summary.json                   written last, once the run is complete
    RUN/run.lock                       held by the process training the run (io.hold_lock)
    RUN/checkpoints/step_NNNNNNNN/     weights, optimizer, state.json, manifest.json (see checkpoint.py)
    RUN/checkpoints/LATEST             name of the newest complete checkpoint
    RUN/branch_points/step_NNNNNNNN/   kept copies where WSD cooldown branches (and labs) start

Torch-free: the ladder, the report and the CLI read runs without importing torch.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from scalelab.config import identity_diff, load_dict
from scalelab.errors import UserError
from scalelab.io import atomic_write_json, read_json
from scalelab.train.records import read_records


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


MANIFEST = "manifest.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(ckpt: Path) -> None:
    """Size and SHA-256 of every file of a checkpoint directory, written last (checkpoint.py)."""
    files = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
             for p in sorted(ckpt.iterdir()) if p.is_file() and p.name != MANIFEST}
    (ckpt / MANIFEST).write_text(json.dumps(files, indent=1))


def checkpoint_problem(ckpt: Path, full: bool = True) -> str | None:
    """Why a checkpoint cannot be trusted (None: it can). With a manifest every listed file must have
    its size (and, when ``full``, its SHA-256); without one (checkpoints of older versions) state.json
    must parse."""
    ckpt = Path(ckpt)
    try:
        if not (ckpt / MANIFEST).exists():
            json.loads((ckpt / "state.json").read_text())
            return None
        for name, want in json.loads((ckpt / MANIFEST).read_text()).items():
            f = ckpt / name
            if not f.exists():
                return f"{name} is missing"
            if f.stat().st_size != want["bytes"]:
                return f"{name} has {f.stat().st_size} bytes, the manifest says {want['bytes']}"
            if full and file_sha256(f) != want["sha256"]:
                return f"{name} does not match its checksum"
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable: {e}"


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


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
    def lock_file(self) -> Path:
        """Held (flock) by the process training this run: one writer at a time."""
        return self.path / "run.lock"

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

    def has_checkpoint(self) -> bool:
        """Whether any checkpoint was written (good or not: `latest_checkpoint` decides which to trust)."""
        return any(p.is_dir() for p in self.checkpoints.glob("step_*"))

    def latest_checkpoint(self, report=None, full: bool = True) -> Path | None:
        """The newest checkpoint that passes `checkpoint_problem` (LATEST's first, then by step), else
        None when there is none at all. Each corrupt one skipped is reported (``report(message)``,
        default: a warning line on stderr); if every one is corrupt, a one-line error. ``full=False``
        checks sizes only, not checksums (a quick look, before the load that checks everything)."""
        marker = self.checkpoints / "LATEST"
        named = [self.checkpoints / marker.read_text().strip()] if marker.exists() else []
        done = sorted((p for p in self.checkpoints.glob("step_*") if p.is_dir()), reverse=True)
        candidates = list(dict.fromkeys(p for p in named + done if p.is_dir()))
        bad = []
        for p in candidates:
            problem = checkpoint_problem(p, full)
            if problem is None:
                for b in bad:
                    (report or _warn)(f"checkpoint {b} is corrupt; resuming from {p.name} instead")
                return p
            bad.append(f"{p.name} ({problem})")
        if bad:
            raise UserError(f"every checkpoint in {self.checkpoints} is corrupt: {'; '.join(bad)}; train from "
                            "scratch into a new --out, or delete the checkpoints/ folder")
        return None

    # ---- reading and writing -------------------------------------------------------------
    def read_config(self):
        """The run's RunConfig (strictly parsed, as `scalelab train` would)."""
        if not self.config_file.exists():
            raise UserError(f"{self.path} is not a scalelab run directory (no config.json)")
        return load_dict(read_json(self.config_file, "run config"))

    def write_config(self, cfg) -> None:
        atomic_write_json(self.config_file, cfg.to_dict())

    def clear(self) -> None:
        """Delete what a run wrote here (checkpoints, branch points, metrics, summary, config, tokenizer);
        anything else in the folder is left alone."""
        import shutil

        for d in (self.checkpoints, self.path / "branch_points"):
            shutil.rmtree(d, ignore_errors=True)
        for f in (self.summary_file, self.metrics_file, self.config_file, self.tokenizer_file):
            f.unlink(missing_ok=True)

    def check_same_run(self, cfg, fix: str) -> None:
        """Refuse to reuse or resume this run for ``cfg`` if it was started with another identity
        (config.py `identity`): one line naming the keys that differ and ``fix``, the way out."""
        if not self.config_file.exists() or not (self.has_checkpoint() or self.is_complete()):
            return
        diff = identity_diff(self.read_config(), cfg)
        if diff:
            more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
            raise UserError(f"{self.path} holds a run of another config ({'; '.join(diff[:4])}{more}); {fix}")

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
