"""`MetricsRecord`: the one record type of a run's metrics, shared by the training loop (which writes
``metrics.jsonl``), the ladder store, the results table the laws read, and the labs.

Torch-free: records are plain numbers by the time they are built.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from scalelab.errors import UserError
from scalelab.io import atomic_write_text


@dataclass(frozen=True)
class MetricsRecord:
    step: int
    """Optimizer steps done (1-based: the record of step 10 is written after the 10th update)."""
    tokens: int
    """Training tokens seen so far."""
    flops: float
    """Exact training FLOPs so far (every matmul, attention included: `flops_per_token_exact`)."""
    lr: float
    train_loss: float
    """Mean training loss (nats/token) over the steps since the previous record."""
    grad_norm: float = math.nan
    """Global gradient norm before clipping, at this step."""
    tokens_per_s: float = math.nan
    mfu: float = math.nan
    """Model FLOPs utilisation: against the datasheet's dense bf16 peak on known GPUs training in bf16,
    else against the measured matmul peak of the device (summary.json says which: ``peak_source``)."""
    val_loss: float | None = None
    """Validation loss (nats/token); only on evaluation steps."""
    val_bpb: float | None = None
    """Validation bits per byte (tokenizer-independent)."""
    lb_loss: float | None = None
    """MoE only: Switch load-balancing loss (>= 1; 1 is perfectly balanced)."""
    z_loss: float | None = None
    dropped_frac: float | None = None
    expert_load: tuple[float, ...] | None = None
    """MoE only: fraction of routed tokens per expert, averaged over layers and the window."""
    tasks: dict[str, dict[str, float]] | None = None
    """Runs with `[tasks]`, on evaluation steps: per task spec, its metrics on the held-out problems
    (`scalelab.evaluate.during.METRICS`)."""

    @property
    def evaluated(self) -> bool:
        return self.val_loss is not None

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
                if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> MetricsRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known and v is not None}
        for k in ("lr", "train_loss"):  # not logged at that step (an imported run's evaluation-only point)
            kw.setdefault(k, math.nan)
        if kw.get("expert_load") is not None:
            kw["expert_load"] = tuple(kw["expert_load"])
        return cls(**kw)


FIELDS = tuple(f.name for f in dataclasses.fields(MetricsRecord))


def read_records(path: Path) -> list[MetricsRecord]:
    """Every record of a metrics.jsonl. A last line cut short (the process was killed while appending
    it) is skipped: it was never complete; a damaged line before it is an error naming the line."""
    p = Path(path)
    if not p.exists():
        return []
    lines = [ln for ln in p.read_bytes().decode("utf-8", "replace").splitlines() if ln.strip()]
    out = []
    for i, ln in enumerate(lines):
        try:
            out.append(MetricsRecord.from_dict(json.loads(ln)))
        except (json.JSONDecodeError, TypeError, AttributeError):
            if i == len(lines) - 1:
                break
            raise UserError(f"{p} line {i + 1} is damaged; restore the file or delete the run directory "
                            "and train it again") from None
    return out


class MetricsWriter:
    """Appends one JSON object per line; on resume, drops lines past the checkpoint's step so the
    file reads exactly as an uninterrupted run's. ``kept`` holds the records kept on resume."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        self.kept: list[MetricsRecord] = []
        if resume_step is not None and self.path.exists():
            self.kept = [r for r in read_records(self.path) if r.step <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r.to_dict()) + "\n" for r in self.kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._f = self.path.open("a")

    def write(self, record: MetricsRecord) -> None:
        self._f.write(json.dumps(record.to_dict()) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()
