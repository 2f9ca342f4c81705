"""Tables of loss curves: every logged point of every run with its learning rate, read into `Curve`s.

The tidy format (`scalelab fit CURVES.csv --curves`, written by `scalelab ladder export --curves`):

    run, N, step, tokens, lr, loss

one row per logged step (``step`` = optimizer updates done; ``loss`` may be empty on rows that log only the
learning rate). A run's learning rate at every step 0..T comes from, in order: a ``--schedules`` table
(``run, step, lr``, ideally every step), else its own rows' ``lr``, linearly interpolated between logged steps
(from 0 at step 0 when the first logged rate is still warming up, else held flat before the first).
Warmup ends at the first step that reaches the run's peak rate; the laws
start there, so points logged during warmup are left out (and counted in ``notes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scalelab.errors import UserError
from scalelab.laws.curves import Curve, warmup_end
from scalelab.laws.table import read_frame

COLUMNS = ("run", "N", "step", "tokens", "lr", "loss")


@dataclass
class CurveTable:
    """Runs grouped by size: ``by_size[N]`` is the list of that size's curves."""

    by_size: dict[float, list[Curve]]
    tokens_per_step: dict[str, float]
    """Each run's training tokens per optimizer step (median of tokens / step over its rows)."""
    peak_lr: float
    """The largest peak learning rate among the runs."""
    notes: list[str] = field(default_factory=list)

    @property
    def curves(self) -> list[Curve]:
        return [c for cs in self.by_size.values() for c in cs]


def _read(src) -> pd.DataFrame:
    return src.copy() if isinstance(src, pd.DataFrame) else read_frame(src)


def _numeric(df: pd.DataFrame, cols, what: str) -> None:
    for c in cols:
        v = pd.to_numeric(df[c], errors="coerce")
        bad = v.isna() & df[c].notna()
        if bad.any():
            raise UserError(f"{what}: column {c!r} has a non-number ({df[c][bad].iloc[0]!r}) on row "
                            f"{int(np.flatnonzero(bad.to_numpy())[0]) + 2}; fix or remove that row")
        df[c] = v


def _lr_per_step(steps: np.ndarray, lrs: np.ndarray, last: int) -> np.ndarray:
    keep = np.isfinite(lrs)
    steps, lrs = steps[keep], lrs[keep]
    order = np.argsort(steps)
    steps, lrs = steps[order], lrs[order]
    if steps[0] > 0 and lrs[0] < lrs.max():  # logged mid-warmup: the warmup starts from 0 at step 0
        steps, lrs = np.r_[0, steps], np.r_[0.0, lrs]
    return np.interp(np.arange(last + 1), steps, lrs)


def _run_curve(run: str, g: pd.DataFrame, sched: pd.DataFrame | None, notes: list[str]) -> Curve | None:
    g = g.sort_values("step")
    last = int(g["step"].max())
    src = sched[sched["run"].astype(str) == run] if sched is not None else None
    if src is not None and len(src):
        lr = _lr_per_step(src["step"].to_numpy(int), src["lr"].to_numpy(float), last)
    elif "lr" in g and g["lr"].notna().any():
        lr = _lr_per_step(g["step"].to_numpy(int), g["lr"].to_numpy(float), last)
    else:
        raise UserError(f"run {run}: no learning rates; add an `lr` column or give --schedules FILE "
                        f"(columns run, step, lr)")
    if np.any(lr < 0) or lr.max() <= 0:
        raise UserError(f"run {run}: learning rates must be non-negative with a positive peak")
    warmup = warmup_end(lr)
    pts = g[g["loss"].notna()]
    early = pts["step"] < warmup
    if early.any():
        notes.append(f"run {run}: {int(early.sum())} point(s) logged during warmup (before step {warmup}) left out")
    pts = pts[~early].drop_duplicates("step", keep="last")
    if len(pts) == 0:
        notes.append(f"run {run}: no loss logged after warmup; left out")
        return None
    return Curve(run, lr, pts["step"].to_numpy(int), pts["loss"].to_numpy(float), warmup)


def read_curves(src, schedules=None) -> CurveTable:
    """A `CurveTable` from a tidy curve table (path or DataFrame) and optional per-step schedules."""
    df = _read(src)
    missing = [c for c in ("run", "N", "step", "loss") if c not in df.columns]
    if missing:
        raise UserError(f"curve table: missing column(s) {', '.join(missing)}; a curve table has columns "
                        f"{', '.join(COLUMNS)} (`scalelab ladder export LADDER --curves --out curves.csv` writes one)")
    _numeric(df, [c for c in ("N", "step", "tokens", "lr", "loss") if c in df.columns], "curve table")
    sched = None
    if schedules is not None:
        sched = _read(schedules)
        if missing := [c for c in ("run", "step", "lr") if c not in sched.columns]:
            raise UserError(f"--schedules: missing column(s) {', '.join(missing)}; it has columns run, step, lr")
        _numeric(sched, ["step", "lr"], "--schedules")
    if df["N"].isna().any() or (df["N"] <= 0).any():
        raise UserError("curve table: every row needs a positive N (the run's parameter count)")
    if (df["step"] < 0).any():
        raise UserError("curve table: steps must be >= 0")
    notes: list[str] = []
    if "holdout" in df.columns and df["holdout"].astype(str).str.lower().isin(["true", "1"]).any():
        held = df["holdout"].astype(str).str.lower().isin(["true", "1"])
        notes.append(f"left out {df.loc[held, 'run'].nunique()} held-out run(s) (the ladder's `holdout` column)")
        df = df[~held]
    by_size: dict[float, list[Curve]] = {}
    tps: dict[str, float] = {}
    for run, g in df.groupby(df["run"].astype(str), sort=False):
        if g["N"].nunique() > 1:
            raise UserError(f"run {run}: rows disagree on N ({sorted(g['N'].unique())[:3]}); one N per run")
        c = _run_curve(run, g, sched, notes)
        if c is None:
            continue
        by_size.setdefault(float(g["N"].iloc[0]), []).append(c)
        if "tokens" in g and (g["step"] > 0).any() and g["tokens"].notna().any():
            r = g[(g["step"] > 0) & g["tokens"].notna()]
            tps[run] = float(np.median(r["tokens"] / r["step"]))
    if not by_size:
        raise UserError("curve table: no run has a loss logged after its warmup")
    peak = max(float(c.lr.max()) for cs in by_size.values() for c in cs)
    return CurveTable(dict(sorted(by_size.items())), tps, peak, notes)
