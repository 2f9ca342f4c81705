"""`scalelab ladder import`: runs trained anywhere (`ladder.sources`) written as an ordinary ladder store.

For each run: N from its model config (a Hugging Face config.json through `scalelab count`'s exact counts, a
scalelab run config, one the tracker logged) or ``--params``; tokens at each step from a logged token count,
else ``--tokens-per-step`` or a scalelab config's batch x sequence; the loss from ``--loss-key`` or the first
validation key present (else the first training-loss key); the learning rate where it was logged. Every point
becomes a `MetricsRecord` (FLOPs = 6 N tokens), the run is `done` at its last loss point, and the store is
built in a temporary folder renamed into place at the end: a failed import leaves nothing behind.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scalelab.errors import UserError
from scalelab.ladder.sources import RunLog, discover, read
from scalelab.ladder.store import Store
from scalelab.model.sources import config_counts
from scalelab.train.records import MetricsRecord

VAL_KEYS = ("val_loss", "eval_loss", "eval/loss", "val/loss", "validation/loss", "valid/loss", "loss/val",
            "validation_loss", "lm loss validation")
TRAIN_KEYS = ("train_loss", "train/loss", "loss", "loss/train", "training_loss", "lm loss")
LR_KEYS = ("lr", "learning_rate", "train/learning_rate", "train/lr", "optim/lr", "learning-rate")
TOKEN_KEYS = ("tokens", "num_input_tokens_seen", "train/num_input_tokens_seen", "tokens_seen", "consumed_tokens")
TASK_PREFIX = "tasks/"  # scalelab's trackers log task metrics as tasks/<task>/<metric>


@dataclass(frozen=True)
class ImportOptions:
    tokens_per_step: float | None = None
    loss_key: str | None = None
    params: float | None = None
    """N for every run (overrides the configs)."""


@dataclass
class ImportedRun:
    """One run as the store's `add_planned` takes it."""

    name: str
    N: int
    N_non_embedding: int
    steps: int
    D: int
    spec: dict

    @property
    def C(self) -> float:
        return 6.0 * self.N * self.D

    @property
    def budget(self) -> float:
        return self.C

    def record(self) -> dict:
        return self.spec


def _first(series: dict, keys) -> str | None:
    return next((k for k in keys if k in series and series[k]), None)


def run_size(log: RunLog, opts: ImportOptions) -> tuple[int, int]:
    """(N total, N non-embedding) from --params, else the run's model config, else a logged N."""
    if opts.params:
        return int(opts.params), int(opts.params)
    if log.config:
        try:
            _, c = config_counts(log.config)
        except (UserError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"run {log.name}: its model config could not be counted ({e}); give --params N") from None
        return int(c["num_params_total"]), int(c.get("num_params_non_embedding", c["num_params_total"]))
    if "N" in log.params:
        return int(log.params["N"]), int(log.params["N"])
    raise UserError(f"run {log.name} ({log.path}): no model config (config.json beside its logs, or one its tracker "
                    f"logged) gives N; give --params N")


def _tokens_per_step(log: RunLog, opts: ImportOptions) -> tuple[float | None, str | None]:
    if key := _first(log.series, TOKEN_KEYS):
        return None, key
    if opts.tokens_per_step:
        return opts.tokens_per_step, None
    cfg = log.config or {}
    t = cfg.get("train") if isinstance(cfg.get("train"), dict) else None
    if t and all(k in t for k in ("batch_size", "seq_len")):
        return float(t["batch_size"] * t.get("grad_accum", 1) * t["seq_len"]), None
    raise UserError(f"run {log.name}: no token count logged ({', '.join(TOKEN_KEYS[:2])} ...) and no batch x sequence "
                    f"in its config; give --tokens-per-step B")


def loss_key(log: RunLog, opts: ImportOptions) -> str:
    if opts.loss_key:
        if opts.loss_key not in log.series:
            raise UserError(f"--loss-key {opts.loss_key}: run {log.name} logged no such key; its keys: "
                            f"{', '.join(sorted(log.series)[:15])}")
        return opts.loss_key
    key = _first(log.series, VAL_KEYS) or _first(log.series, TRAIN_KEYS)
    if key is None:
        raise UserError(f"run {log.name}: no loss key found among {', '.join(sorted(log.series)[:15])}; "
                        f"name it with --loss-key KEY")
    return key


def records(log: RunLog, opts: ImportOptions, n: int) -> tuple[str, list[MetricsRecord]]:
    """The chosen loss key and the run's records up to its last loss point."""
    key = loss_key(log, opts)
    loss = log.series[key]
    train_key = next((k for k in TRAIN_KEYS if k in log.series and k != key), None)
    lr_key = _first(log.series, LR_KEYS)
    tps, tok_key = _tokens_per_step(log, opts)
    last = max(loss)
    steps = sorted({s for k in (key, train_key, lr_key, tok_key) if k for s in log.series[k] if s <= last})
    if tok_key:
        logged = log.series[tok_key]
        xs = np.array(sorted(logged))
        tokens = np.interp(steps, np.r_[0, xs], np.r_[0.0, [logged[x] for x in xs]])
        rate = logged[xs[-1]] / max(xs[-1], 1)
        tokens = np.where(np.array(steps) > xs[-1], np.array(steps) * rate, tokens)
    else:
        tokens = np.array(steps, float) * tps
    tasks = _tasks(log)
    out = []
    for s, t in zip(steps, tokens):
        out.append(MetricsRecord(step=int(s), tokens=int(round(t)), flops=6.0 * n * float(t),
                                 lr=log.series[lr_key].get(s, math.nan) if lr_key else math.nan,
                                 train_loss=log.series[train_key].get(s, math.nan) if train_key else math.nan,
                                 val_loss=loss.get(s), tasks=tasks.get(s)))
    return key, out


def _tasks(log: RunLog) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for k, pts in log.series.items():
        if k.startswith(TASK_PREFIX) and k.count("/") == 2:
            _, task, metric = k.split("/")
            for s, v in pts.items():
                out.setdefault(s, {}).setdefault(task, {})[metric] = v
    return out


def _unique(name: str, taken: set[str]) -> str:
    base, i = name, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def _shape(cfg: dict | None) -> tuple[int | None, int | None]:
    if not cfg:
        return None, None
    if isinstance(cfg.get("model"), dict):
        return cfg["model"].get("d_model"), cfg["model"].get("n_layers")
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    return (text.get("hidden_size") or text.get("n_embd") or text.get("d_model"),
            text.get("num_hidden_layers") or text.get("n_layer") or text.get("num_layers"))


def plan_import(logs: list[RunLog], opts: ImportOptions) -> list[tuple[ImportedRun, list[MetricsRecord]]]:
    """Every run's store row and records, checked before anything is written."""
    out, taken = [], set()
    for log in logs:
        n, n_ne = run_size(log, opts)
        key, recs = records(log, opts, n)
        lrs = [r.lr for r in recs if math.isfinite(r.lr)]
        d_model, n_layers = _shape(log.config)
        spec = {"name": _unique(log.name, taken), "source": log.source, "imported_from": log.path, "loss_key": key,
                "N": n, "d_model": d_model, "n_layers": n_layers, "lr": max(lrs) if lrs else None,
                "batch_size": None}
        final = max((r for r in recs if r.val_loss is not None), key=lambda r: r.step)
        out.append((ImportedRun(spec["name"], n, n_ne, final.step, final.tokens, spec), recs))
    return out


def import_ladder(paths: list[str], out: str | Path, opts: ImportOptions, source: str | None = None,
                  mapping: dict[str, str] | None = None) -> list[dict]:
    """Read every run under ``paths`` and write them as a ladder store at ``out`` (made whole, or not at all)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; import into a new --out folder")
    logs = [log for kind, p in discover(paths, source) for log in read(kind, p, mapping)]
    planned = plan_import(logs, opts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.importing-", dir=out.parent))
    try:
        store = Store(tmp / "ladder.sqlite")
        store.add_planned([run for run, _ in planned])
        for run, recs in planned:
            store.add_points(run.name, recs)
            final = next(r for r in reversed(recs) if r.val_loss is not None)
            store.mark_done(run.name, {"val_loss": final.val_loss}, final.flops, 0.0)
        store.set_meta("imported", {"paths": [str(p) for p in paths], "source": source,
                                    "options": {k: v for k, v in vars(opts).items() if v is not None}})
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.close()
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [{"run": run.name, "source": run.spec["source"], "N": run.N, "tokens": run.D, "points": len(recs),
             "loss_key": run.spec["loss_key"], "final_loss": next(r.val_loss for r in reversed(recs)
                                                                  if r.val_loss is not None),
             "from": run.spec["imported_from"]} for run, recs in planned]
