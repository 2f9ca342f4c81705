"""What every lab shares: task models trained through the one training loop, and lab outputs.

A lab writes into ``--out DIR``:

    DIR/runs/<name>/      one ordinary scalelab run per model (config, metrics.jsonl, checkpoints)
    DIR/summary.json      every number the lab measured (written atomically, last)
    DIR/*.png             its figures (matplotlib)
    DIR/report.html       one self-contained page: the figures, the tables and the notes

Runs whose ``summary.json`` exists are reused, and a run killed midway resumes from its checkpoint:
a lab that is interrupted and started again continues where it stopped.
"""

from __future__ import annotations

import html
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from scalelab import plotting
from scalelab.config import DataConfig, load_dict
from scalelab.data.chars import CHAR_VOCAB_SIZE, build_task_dataset
from scalelab.data.shards import DataSpec, TokenDataset, documents
from scalelab.data.tasks import TaskMix
from scalelab.errors import UserError
from scalelab.io import atomic_write_text, to_plain
from scalelab.labs import progress
from scalelab.report.page import png_img, write_page
from scalelab.train.rundir import RunDir
from scalelab.train.runner import ensure_trained, load_run


@dataclass(frozen=True)
class Shape:
    d_model: int
    n_layers: int

    @property
    def name(self) -> str:
        return f"d{self.d_model}L{self.n_layers}"

    @staticmethod
    def parse(text: str) -> Shape:
        """'64x2' -> Shape(64, 2)."""
        try:
            d, L = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise UserError(f"a model size looks like D_MODELxLAYERS (e.g. 64x2), got {text!r}") from None
        if d < 8 or d % 8 or L < 1:
            raise UserError(f"model size {text!r}: d_model must be a multiple of 8 and layers >= 1")
        return Shape(d, L)


def model_dict(shape: Shape, max_seq_len: int = 128, moe: dict | None = None, **extra) -> dict:
    heads = max(1, shape.d_model // 16)  # head_dim 16 at every width
    d = {"vocab_size": CHAR_VOCAB_SIZE, "d_model": shape.d_model, "n_layers": shape.n_layers, "n_heads": heads,
         "n_kv_heads": heads, "max_seq_len": max_seq_len, **extra}
    if moe:
        d["moe"] = moe
    return d


def run_config(model: dict, tokens: int, lr: float, batch_size: int, seq_len: int, seed: int,
               data: dict | None = None, **train_extra):
    """A lab model's run config: evaluated once at the end, eager, quiet; ``data`` the [data] section
    (default: the run defaults), ``train_extra`` any other train keys."""
    return load_dict({"model": model, "optim": {"lr": lr}, **({"data": data} if data is not None else {}),
                      "train": {"batch_size": batch_size, "seq_len": seq_len, "max_tokens": tokens, "seed": seed,
                                "eval_every": 10 ** 9, "eval_tokens": 16_384, "log_every": 50, "progress": False,
                                "compile": "off", **train_extra}})


@dataclass(frozen=True)
class TrainSettings:
    """How the models of a lab on the offline corpus train; lab specs inherit these settings."""

    vocab_size: int = 512
    seq_len: int = 128
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0
    eval_tokens: int = 65_536
    data: DataConfig = field(default_factory=lambda: DataConfig(tokenizer_train_bytes=4_000_000))

    def run_config(self, size: str, tokens: int, data: dict | None = None, **train_extra):
        """A ``size`` model ('64x2') trained on ``tokens`` with these settings (``data``: another [data])."""
        model = model_dict(Shape.parse(size), max_seq_len=self.seq_len, vocab_size=self.vocab_size)
        return run_config(model, tokens, self.lr, self.batch_size, self.seq_len, self.seed,
                          data=asdict(self.data) if data is None else data,
                          **{"eval_tokens": self.eval_tokens, **train_extra})


def corpus_head(corpus: str, max_bytes: int) -> list[tuple[str, str]]:
    """The (doc_id, text) pairs a dataset of ``corpus`` capped at ``max_bytes`` is built from."""
    return list(documents(DataSpec(corpus=corpus, max_bytes=max_bytes)))


def write_documents(path: Path, rows) -> None:
    """(doc_id, text, kind) rows as a JSONL corpus (`id` names each document: data/corpora.py), atomically."""
    atomic_write_text(path, "".join(json.dumps({"id": i, "text": t, "kind": k}) + "\n" for i, t, k in rows))


def read_documents(path: Path) -> list[tuple[str, str, str]]:
    with open(path, encoding="utf-8") as f:
        return [(r["id"], r["text"], r.get("kind", "")) for r in map(json.loads, f)]


def task_dataset(mix: TaskMix, out: Path, train_chars: int) -> TokenDataset:
    return TokenDataset(build_task_dataset(mix, train_chars, Path(out) / "data"))


def begin(spec, out: str | Path):
    """A lab's start: its settings checked, its output folder made, its clock started."""
    out = Path(out)
    spec = spec.validate()
    out.mkdir(parents=True, exist_ok=True)
    return spec, out, time.perf_counter()


def train_or_load(cfg, run_dir: Path | RunDir, dataset: TokenDataset, log=print, branch_points: tuple[int, ...] = ()):
    """Train one run through `ensure_trained` (reused if complete, resumed if started);
    -> (model in eval mode, summary)."""
    run = RunDir.of(run_dir)
    fresh = not run.is_complete()
    if fresh and sys.stdout.isatty() and not progress.active():  # on a terminal without a lab bar, each
        # model's own bar: steps, loss, tokens/s, ETA
        cfg = replace(cfg, train=replace(cfg.train, progress=True))
    summary = ensure_trained(cfg, run, dataset=dataset, branch_points=branch_points)
    if fresh:
        f = summary["final"]
        log(f"  trained {run.name}: {summary['num_params_total']:,} params, {summary['tokens']:,} tokens, "
            f"val loss {f.get('val_loss', math.nan):.4f}")
    return load_run(run)[0], summary


def write_summary(out: Path, summary: dict) -> Path:
    path = Path(out) / "summary.json"
    atomic_write_text(path, json.dumps(to_plain(summary), indent=2, default=str))
    return path


def write_report(out: Path, title: str, sections: list[tuple[str, str, list[Path], str]]) -> Path:
    """sections: (heading, paragraph text, PNG paths to embed, extra HTML such as tables)."""
    body = "\n".join(f"<section><h2>{html.escape(heading)}</h2><p>{html.escape(text)}</p>"
                     f"{''.join(png_img(p) for p in images)}{extra}</section>"
                     for heading, text, images, extra in sections)
    return write_page(Path(out) / "report.html", title, body)


def savefig(fig, out: Path, name: str) -> Path:
    path = Path(out) / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def pyplot():
    """`subplots` as pyplot has it, without pyplot (`scalelab.plotting`: the user's backend is left alone)."""
    return plotting
