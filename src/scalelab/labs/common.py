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

import base64
import datetime
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from scalelab import __version__
from scalelab.config import load_dict
from scalelab.data.shards import TokenDataset
from scalelab.data.tasks import CHAR_VOCAB_SIZE, TaskMix, build_task_dataset
from scalelab.errors import UserError
from scalelab.train.checkpoint import atomic_write_text, latest_checkpoint


@dataclass(frozen=True)
class Shape:
    d_model: int
    n_layers: int

    @property
    def name(self) -> str:
        return f"d{self.d_model}L{self.n_layers}"

    @staticmethod
    def parse(text: str) -> "Shape":
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


def run_config(model: dict, tokens: int, lr: float, batch_size: int, seq_len: int, seed: int, **train_extra):
    return load_dict({"model": model, "optim": {"lr": lr},
                      "train": {"batch_size": batch_size, "seq_len": seq_len, "max_tokens": tokens, "seed": seed,
                                "eval_every": 10 ** 9, "eval_tokens": 16_384, "log_every": 50, "progress": False,
                                "compile": "off", **train_extra}})


def task_dataset(mix: TaskMix, out: Path, train_chars: int) -> TokenDataset:
    return TokenDataset(build_task_dataset(mix, train_chars, Path(out) / "data"))


def train_or_load(cfg, run_dir: Path, dataset: TokenDataset, log=print, save_at: tuple[int, ...] = ()):
    """Train one run (resuming a partial one) unless it is complete; -> (model in eval mode, summary)."""
    from scalelab.ladder.executors import _Quiet
    from scalelab.train.loop import load_run, train

    run_dir = Path(run_dir)
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
    else:
        resume = latest_checkpoint(run_dir) is not None
        summary = train(cfg, run_dir, resume=resume, dataset=dataset, save_at=save_at, console=_Quiet())  # no bar
        f = summary["final"]
        log(f"  trained {run_dir.name}: {summary['num_params_total']:,} params, {summary['tokens']:,} tokens, "
            f"val loss {f.get('val_loss', math.nan):.4f}")
    model = load_run(run_dir)[0].eval()
    return model, summary


def write_summary(out: Path, summary: dict) -> Path:
    path = Path(out) / "summary.json"
    atomic_write_text(path, json.dumps(summary, indent=2, default=_json_default))
    return path


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
 body {{ font-family: system-ui, -apple-system, sans-serif; margin: 0 auto; max-width: 1150px; padding: 1em 2em; color: #222; }}
 h1 {{ font-size: 1.5em; margin-bottom: 0.2em; }} .meta {{ color: #555; font-size: 0.9em; }}
 table {{ border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.88em; }}
 td, th {{ padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: right; }} th {{ background: #f4f4f4; }}
 img {{ max-width: 100%; }} p {{ max-width: 62em; }} section {{ margin-bottom: 2em; }}
</style></head><body>
<h1>{title}</h1><div class="meta">scalelab {version}, written {date}</div>
{body}
</body></html>
"""


def table_html(rows: list[dict], floatfmt: str = "{:.4g}") -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(floatfmt.format(r[c]) if isinstance(r[c], float) else str(r[c]))}</td>"
                                    for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(out: Path, title: str, sections: list[tuple[str, str, list[Path], str]]) -> Path:
    """sections: (heading, paragraph text, PNG paths to embed, extra HTML such as tables)."""
    parts = []
    for heading, text, images, extra in sections:
        imgs = "".join(f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
                       f'{base64.b64encode(p.read_bytes()).decode()}">' for p in images)
        parts.append(f"<section><h2>{html.escape(heading)}</h2><p>{html.escape(text)}</p>{imgs}{extra}</section>")
    page = PAGE.format(title=html.escape(title), version=__version__,
                       date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), body="\n".join(parts))
    path = Path(out) / "report.html"
    atomic_write_text(path, page)
    return path


def savefig(fig, out: Path, name: str) -> Path:
    import matplotlib.pyplot as plt

    path = Path(out) / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
