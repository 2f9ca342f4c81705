"""Learning-rate schedules named on the command line, as a per-step array for the curve laws.

``SPEC`` is ``KIND[:key=value,...]`` or a CSV file of per-step rates (columns ``step, lr``):

    constant                    warmup, then flat
    cosine:min=0.1              warmup, cosine to min x peak at the last step (scalelab's cosine)
    wsd:decay=0.2,shape=linear  warmup, flat, then a cooldown over the last ``decay`` of the steps (or from
                                step ``decay_start``) to min x peak; shape linear (scalelab's WSD), cosine,
                                sqrt (1 - sqrt of the progress, Hägele et al. 2024) or exp (geometric)
    two-stage:at=0.8,ratio=0.1  warmup, flat, then ``ratio`` x peak from ``at`` (a fraction or a step) on

Every kind takes ``warmup`` (steps, or a fraction of the run when below 1; default: the fitted runs'
warmup). The formulas are those of `scalelab.train.schedule.lr_at` for the kinds scalelab trains
(cosine, wsd linear, constant), so a forecast of a scalelab run sees the rates it will train with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.errors import UserError

KEYS = {"constant": {"warmup"}, "cosine": {"warmup", "min"},
        "wsd": {"warmup", "min", "decay", "decay_start", "shape"}, "two-stage": {"warmup", "at", "ratio"}}
SHAPES = ("linear", "cosine", "sqrt", "exp")


def _parse(spec: str) -> tuple[str, dict[str, str]]:
    kind, _, rest = spec.partition(":")
    if kind not in KEYS:
        raise UserError(f"--schedule: unknown kind {kind!r}; use {', '.join(KEYS)} (e.g. wsd:decay=0.2) or a CSV "
                        f"of per-step rates (columns step, lr)")
    opts = {}
    for item in filter(None, rest.split(",")):
        k, eq, v = item.partition("=")
        if not eq or k not in KEYS[kind]:
            raise UserError(f"--schedule: {kind} takes {', '.join(sorted(KEYS[kind]))} as key=value; got {item!r}")
        opts[k] = v
    return kind, opts


def _num(opts: dict, key: str, default: float) -> float:
    try:
        v = float(opts.get(key, default))
    except ValueError:
        raise UserError(f"--schedule: {key} must be a number, got {opts[key]!r}") from None
    if not np.isfinite(v) or v < 0:
        raise UserError(f"--schedule: {key} must be a non-negative number, got {opts[key]!r}")
    return v


def _steps(v: float, total: int) -> int:
    """A step count given as steps (>= 1) or as a fraction of the run (< 1)."""
    return int(round(v * total)) if v < 1 else int(v)


def _cooldown(shape: str, x: np.ndarray, peak: float, floor: float) -> np.ndarray:
    if shape == "linear":
        return peak + (floor - peak) * x
    if shape == "cosine":
        return floor + (peak - floor) * 0.5 * (1 + np.cos(np.pi * x))
    if shape == "sqrt":
        return floor + (peak - floor) * (1 - np.sqrt(x))
    return peak ** (1 - x) * max(floor, peak * 1e-6) ** x  # exp: geometric to the floor


def schedule_lr(spec: str, total_steps: int, peak_lr: float, warmup_steps: int = 0) -> np.ndarray:
    """The learning rate of updates 0..total_steps (index s = the rate of update s; one extra entry so that
    the curve laws can read the loss after the last update)."""
    if total_steps < 1:
        raise UserError("--steps must be at least 1")
    if spec.endswith(".csv") or Path(spec).is_file():
        return _from_csv(spec, total_steps)
    kind, opts = _parse(spec)
    T = total_steps
    w = min(_steps(_num(opts, "warmup", warmup_steps), T), T)
    s = np.arange(T + 1, dtype=float)
    lr = np.full(T + 1, peak_lr)
    floor = peak_lr * _num(opts, "min", 0.1)
    if kind == "cosine":
        frac = np.clip((s - w) / max(1, T - w - 1), 0, 1)
        lr = floor + (peak_lr - floor) * 0.5 * (1 + np.cos(np.pi * frac))
    elif kind == "wsd":
        shape = opts.get("shape", "linear")
        if shape not in SHAPES:
            raise UserError(f"--schedule: wsd shape must be one of {', '.join(SHAPES)}, got {shape!r}")
        start = _steps(_num(opts, "decay_start", -1), T) if "decay_start" in opts else \
            T - int(round(_num(opts, "decay", 0.2) * T))
        start = max(start, w)
        x = np.clip((s - start + 1) / max(1, T - start), 0, 1)
        lr = np.where(s < start, peak_lr, _cooldown(shape, x, peak_lr, floor))
    elif kind == "two-stage":
        at = _steps(_num(opts, "at", 0.8), T)
        lr = np.where(s < at, peak_lr, peak_lr * _num(opts, "ratio", 0.1))
    warm = peak_lr * (s + 1) / max(w, 1)
    return np.where(s < w, warm, lr)


def _from_csv(path: str, total_steps: int) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--schedule: {p} does not exist (a schedule CSV has columns step, lr)")
    df = pd.read_csv(p)
    if not {"step", "lr"} <= set(df.columns):
        raise UserError(f"--schedule: {p} needs columns step, lr (has {', '.join(df.columns)})")
    st, lr = pd.to_numeric(df["step"], errors="coerce"), pd.to_numeric(df["lr"], errors="coerce")
    if st.isna().any() or lr.isna().any() or (lr < 0).any():
        raise UserError(f"--schedule: {p} has a missing, non-numeric or negative step or lr")
    order = np.argsort(st.to_numpy())
    return np.interp(np.arange(total_steps + 1), st.to_numpy(float)[order], lr.to_numpy(float)[order])
