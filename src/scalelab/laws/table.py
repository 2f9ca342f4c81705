"""Tables of runs: (N, D, loss) rows with optional C, run, step, and the parameter convention.

Column aliases accepted: N = params | n_params | Model Size; D = tokens | Training Tokens;
C = flops | compute | Training FLOP; loss = val_loss | Loss. When only C is given, D = C / (6 N).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.errors import UserError

ALIASES = {
    "N": ["N", "params", "n_params", "num_params", "Model Size", "parameters"],
    "D": ["D", "tokens", "n_tokens", "Training Tokens", "data"],
    "C": ["C", "flops", "compute", "Training FLOP", "FLOPs"],
    "loss": ["loss", "val_loss", "Loss", "final_loss"],
}


@dataclass
class RunTable:
    """Validated run table. ``N`` follows ``param_convention`` ("total" or "non_embedding")."""

    df: pd.DataFrame
    param_convention: str = "total"
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def N(self) -> np.ndarray:
        return self.df["N"].to_numpy(float)

    @property
    def D(self) -> np.ndarray:
        return self.df["D"].to_numpy(float)

    @property
    def C(self) -> np.ndarray:
        return self.df["C"].to_numpy(float)

    @property
    def loss(self) -> np.ndarray:
        return self.df["loss"].to_numpy(float)

    def __len__(self) -> int:
        return len(self.df)

    def subset(self, mask) -> RunTable:
        return RunTable(self.df[np.asarray(mask)].reset_index(drop=True), self.param_convention, self.source,
                        list(self.notes))

    def finals(self) -> RunTable:
        """Only each run's final point (for tables of curves); unchanged if there is no `final`."""
        if "final" in self.df.columns:
            return self.subset(self.df["final"].astype(bool).to_numpy())
        return self

    def run_ids(self) -> np.ndarray:
        return self.df["run"].to_numpy() if "run" in self.df.columns else np.arange(len(self.df))


def embedding_params(d_model, vocab_size: int, tied: bool = True) -> np.ndarray:
    """Vocabulary-matrix parameters of models of width d_model (input embedding, plus the output
    head when untied): the difference between the total and the non-embedding count."""
    return np.asarray(d_model, dtype=np.int64) * vocab_size * (1 if tied else 2)


def convert_params(N, to: str, d_model, vocab_size: int, tied: bool = True) -> np.ndarray:
    """Convert parameter counts between conventions: to="non_embedding" subtracts the vocabulary
    matrices from total counts, to="total" adds them back. Kaplan et al. (2020) fit non-embedding
    N; Hoffmann et al. (2022) total N; at small scale the choice moves the fitted exponents a lot."""
    emb = embedding_params(d_model, vocab_size, tied)
    if to == "non_embedding":
        out = np.asarray(N, dtype=np.int64) - emb
    elif to == "total":
        out = np.asarray(N, dtype=np.int64) + emb
    else:
        raise UserError(f"convert to 'total' or 'non_embedding', got {to!r}")
    if np.any(out <= 0):
        raise UserError("conversion gives non-positive parameter counts: check vocab_size and d_model")
    return out


def _find(df: pd.DataFrame, key: str) -> str | None:
    for a in ALIASES[key]:
        if a in df.columns:
            return a
    return None


def read_frame(path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame; missing or unreadable: one-line `UserError`."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"table not found: {p}")
    try:
        return pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except Exception as e:  # pandas raises many types for malformed files
        raise UserError(f"cannot read table {p}: {e}".splitlines()[0]) from None


def _drop_flagged(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    if "quality" not in df.columns:
        raise UserError("exclude-flagged needs the table's quality column: export the ladder again with "
                        "`scalelab ladder export DIR --out runs.csv`")
    flagged = df["quality"].fillna("").astype(str).str.len() > 0
    runs = df.loc[flagged, "run"].unique() if "run" in df.columns else []
    notes = [f"excluded {r}: {df.loc[df['run'] == r, 'quality'].iloc[0]}" for r in runs]
    return df[~flagged].reset_index(drop=True), notes


def _drop_holdouts(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Rows a ``holdout`` column marks (`ladder export`: runs kept to check a forecast) are not fitted."""
    if "holdout" not in df.columns:
        return df, []
    held = df["holdout"].astype(str).str.strip().str.lower().isin(("true", "1", "yes"))
    if not held.any():
        return df, []
    names = sorted(set(df.loc[held, "run"].astype(str))) if "run" in df.columns else []
    what = f" ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" if names else ""
    return df[~held].reset_index(drop=True), [f"left out {int(held.sum())} held-out row(s){what}: they check the "
                                               "forecast; --include-holdout fits them too"]


def load_table(src, params: str | None = None, drop_highest_loss: int = 0, exclude_flagged: bool = False,
               include_holdout: bool = False) -> RunTable:
    """Read a CSV / Parquet path or a DataFrame into a validated `RunTable`.

    Rows a ``holdout`` column marks true are left out (and said so in the notes) unless
    ``include_holdout``: a ladder's held-out run is what its fit is meant to predict.

    ``exclude_flagged`` drops the runs whose ``quality`` column (`ladder export`: the rung-quality
    checks of ladder/quality.py) names a reason, and says which in the table's notes.

    ``params`` picks the parameter column when a table has several (e.g. the ladder exports ``N``
    (total) and ``N_non_embedding``): "total" or "non_embedding". ``drop_highest_loss`` removes the
    k highest-loss rows (Besiroglu et al. drop 5 outliers from the Chinchilla points).
    """
    if isinstance(src, pd.DataFrame):
        df, source = src.copy(), "DataFrame"
    else:
        df, source = read_frame(src), str(src)
    convention, notes = "total", []
    if not include_holdout:
        df, notes = _drop_holdouts(df)
    if exclude_flagged:
        df, flagged = _drop_flagged(df)
        notes += flagged
    if params == "non_embedding":
        col = next((c for c in ("N_non_embedding", "params_non_embedding") if c in df.columns), None)
        if col is None:
            raise UserError("params=non_embedding needs a column N_non_embedding in the table", arg="params")
        df["N"] = df[col]
        convention = "non_embedding"
    elif params not in (None, "total"):
        raise UserError(f"params must be 'total' or 'non_embedding', got {params!r}")
    cols = {k: _find(df, k) for k in ALIASES}
    if cols["N"] is None:
        raise UserError(f"table has no parameter column; name one of {ALIASES['N']} (columns: {list(df.columns)})")
    if cols["loss"] is None:
        raise UserError(f"table has no loss column; name one of {ALIASES['loss']}")
    out = pd.DataFrame({"N": pd.to_numeric(df[cols["N"]], errors="coerce"),
                        "loss": pd.to_numeric(df[cols["loss"]], errors="coerce")})
    if cols["D"] is not None:
        out["D"] = pd.to_numeric(df[cols["D"]], errors="coerce")
    if cols["C"] is not None:
        out["C"] = pd.to_numeric(df[cols["C"]], errors="coerce")
    if "D" not in out and "C" not in out:
        raise UserError(f"table needs a token column ({ALIASES['D']}) or a compute column ({ALIASES['C']})")
    if "D" not in out:
        out["D"] = out["C"] / (6.0 * out["N"])
    if "C" not in out:
        out["C"] = 6.0 * out["N"] * out["D"]
    for extra in ("run", "step", "final", "budget", "N_non_embedding", "seed"):
        if extra in df.columns:
            out[extra] = df[extra].to_numpy()
    for c in ("N", "D", "C", "loss"):
        bad = ~np.isfinite(out[c].to_numpy(float)) | (out[c].to_numpy(float) <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UserError(f"table row {i + 1}: column {c} must be a positive finite number, got "
                            f"{df.iloc[i][cols.get(c) or c] if (cols.get(c) or c) in df.columns else out[c].iloc[i]!r}")
    if drop_highest_loss > 0:
        keep = out["loss"].rank(method="first", ascending=False) > drop_highest_loss
        out = out[keep.to_numpy()].reset_index(drop=True)
        notes.append(f"dropped the {drop_highest_loss} highest-loss points")
    return RunTable(out.reset_index(drop=True), convention, source, notes)
