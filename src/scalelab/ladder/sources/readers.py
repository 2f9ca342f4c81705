"""Readers of files: Hugging Face Trainer folders, TensorBoard event files, CSV/JSONL logs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from scalelab.errors import UserError
from scalelab.ladder.sources.runlog import RunLog

# a Trainer's end-of-training entry averages the whole run: not a point of the curve
HF_SUMMARY_KEYS = ("train_runtime", "total_flos")


def find_config(d: Path) -> dict | None:
    """The config.json beside a run's logs (in its folder, or two up for a Trainer's runs/<date>/ logs)."""
    for c in (d, d.parent.parent if d.parent.name == "runs" else None):
        if c is not None and (c / "config.json").is_file():
            try:
                return json.loads((c / "config.json").read_text())
            except json.JSONDecodeError:
                raise UserError(f"{c / 'config.json'} is not valid JSON") from None
    return None


def _add(series: dict, key: str, step: int, value) -> None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return
    if math.isfinite(v):
        series.setdefault(key, {})[int(step)] = v


def read_hf(path: str) -> list[RunLog]:
    d = Path(path)
    state = d / "trainer_state.json"
    if not state.exists():  # only checkpoints: the latest one's state holds the whole history so far
        states = sorted(d.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1]))
        state = states[-1]
    try:
        s = json.loads(state.read_text())
        history = s["log_history"]
    except (json.JSONDecodeError, KeyError):
        raise UserError(f"{state} is not a Trainer state (no log_history)") from None
    series: dict = {}
    for entry in history:
        if "step" not in entry or any(k in entry for k in HF_SUMMARY_KEYS):
            continue
        for k, v in entry.items():
            if k not in ("step", "epoch"):
                _add(series, k, entry["step"], v)
    params = {k: s[k] for k in ("train_batch_size", "max_steps", "num_train_epochs") if k in s}
    return [RunLog(d.name, "hf", str(d), series, find_config(d), params)]


def _event_dirs(d: Path) -> list[Path]:
    return sorted({p.parent for pattern in ("events.out.tfevents.*", "tensorboard/events.out.tfevents.*",
                                            "runs/*/events.out.tfevents.*") for p in d.glob(pattern)})


def read_tensorboard(path: str) -> list[RunLog]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    d = Path(path)
    series: dict = {}
    for ev_dir in _event_dirs(d):
        acc = EventAccumulator(str(ev_dir), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            for e in acc.Scalars(tag):
                _add(series, tag, e.step, e.value)
        for tag in tags.get("tensors", []):  # TF2's tf.summary.scalar writes tensors
            for e in acc.Tensors(tag):
                arr = tensor_util.make_ndarray(e.tensor_proto)
                if arr.size == 1:
                    _add(series, tag, e.step, arr.item())
    if not series:
        raise UserError(f"{d}: its TensorBoard event files hold no scalars")
    name = d.parent.parent.name if d.parent.name == "runs" and d.name.startswith(("20", "19")) else d.name
    return [RunLog(name, "tensorboard", str(d), series, find_config(d))]


def parse_map(text: str | None) -> dict[str, str]:
    """``--map step=iter,loss=train/loss`` -> {"iter": "step", "train/loss": "loss"} (column -> our name)."""
    out = {}
    for item in filter(None, (text or "").split(",")):
        ours, eq, theirs = item.partition("=")
        if not eq or not ours.strip() or not theirs.strip():
            raise UserError(f"--map takes OURS=THEIRS pairs (e.g. step=iter,loss=train/loss), got {item!r}")
        out[theirs.strip()] = ours.strip()
    return out


def read_table(path: str, mapping: dict[str, str] | None = None) -> list[RunLog]:
    p = Path(path)
    try:
        df = pd.read_json(p, lines=True) if p.suffix in (".jsonl", ".json") else pd.read_csv(p)
    except ValueError as e:
        raise UserError(f"{p} is not a readable CSV/JSONL log ({str(e).splitlines()[0]})") from None
    df = df.rename(columns=mapping or {})
    if "step" not in df.columns:
        raise UserError(f"{p}: no step column; name it with --map step=COLUMN (columns: "
                        f"{', '.join(map(str, df.columns[:12]))})")
    groups = df.groupby(df["run"].astype(str), sort=False) if "run" in df.columns else [(p.stem, df)]
    runs = []
    for name, g in groups:
        series: dict = {}
        for col in g.columns:
            if col in ("step", "run"):
                continue
            for step, v in zip(g["step"], g[col]):
                if pd.notna(step):
                    _add(series, str(col), step, v)
        params = {"N": float(g["N"].dropna().iloc[0])} if "N" in g.columns and g["N"].notna().any() else {}
        series.pop("N", None)
        runs.append(RunLog(str(name), "table", str(p), series, find_config(p.parent) if len(groups) == 1 else None,
                           params))
    return runs
