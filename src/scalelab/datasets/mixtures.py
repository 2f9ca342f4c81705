"""Builders of the loss-curve and data-mixture tables: raw upstream files -> tidy tables.

The BiMix files are pandas pickles: they are unpickled only after their sha256 matched the registered
one (the registry pins the exact bytes that were inspected), never from an unverified download.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd

Files = dict[str, Path]

# --- Multi-Power Law curves (Luo et al. 2025, thu-yao-01-luo/MultiPowerLaw) ----------------------------------

MPL_SIZES = ("25", "100", "400")


def mpl_curves(files: Files) -> pd.DataFrame:
    """Training-loss curves of 25M / 100M / 400M models under 9 schedules, every 128 steps from the end of
    warmup, with the learning rate at each step as stored (`loss_curve_repo/csv_<size>/<schedule>.csv`)."""
    parts = []
    for size in MPL_SIZES:
        for path in sorted(p for p in files if p.startswith(f"loss_curve_repo/csv_{size}/")):
            d = pd.read_csv(files[path])
            parts.append(pd.DataFrame({"model": f"{size}M", "schedule": Path(path).stem, "step": d["step"],
                                       "lr": d["lr"], "loss": d["loss"]}))
    return pd.concat(parts, ignore_index=True)


# --- RegMix (Liu et al. 2024, sail-sg/regmix) -----------------------------------------------------------------

REGMIX_RUNS = (("train", "1M", "train_mixture_1m.csv", "train_pile_loss_1m.csv"),
               ("test", "1M", "test_mixture_1m.csv", "test_pile_loss_1m.csv"),
               ("test", "60M", "test_mixture_60m.csv", "test_pile_loss_60m.csv"),
               ("test", "1B", "test_mixture_1B.csv", "test_pile_loss_1B.csv"))


def regmix_pile(files: Files) -> pd.DataFrame:
    """One row per proxy run: 17 Pile-domain weights (`w_<domain>`) and 13 validation losses
    (`loss_<domain>` from `metric/the_pile_<domain>_val_loss`), joined on the source's `index`."""
    parts = []
    for split, model, mix_file, loss_file in REGMIX_RUNS:
        w = pd.read_csv(files[f"data/{mix_file}"])
        w.columns = ["mixture_id"] + [f"w_{c.removeprefix('train_the_pile_')}" for c in w.columns[1:]]
        loss = pd.read_csv(files[f"data/{loss_file}"])
        loss.columns = ["mixture_id"] + [
            f"loss_{c.removeprefix('metric/the_pile_').removesuffix('_val_loss')}" for c in loss.columns[1:]]
        parts.append(w.merge(loss, on="mixture_id", how="inner", validate="one_to_one")
                     .assign(split=split, model=model))
    out = pd.concat(parts, ignore_index=True)
    return out[["split", "model", *[c for c in out.columns if c not in ("split", "model")]]]


# --- BiMix (Ge et al. 2024) via ColPret ----------------------------------------------------------------------

BIMIX_CORPORA = ("Pile", "SlimPajama")


def _pickle(path: Path):
    with open(path, "rb") as f:
        return pickle.load(f)  # noqa: S301 - sha256-verified against the registry before this line


def bimix_mixtures(files: Files) -> pd.DataFrame:
    """The 6 mixtures' domain proportions (Baseline, DoReMi and four entropy-driven ones) per corpus."""
    rows = []
    for corpus in BIMIX_CORPORA:
        for mixture, ratios in _pickle(files[f"raw_data/bimix-law/{corpus}/ratios.pkl"]).items():
            rows += [{"corpus": corpus, "mixture": mixture, "domain": d, "proportion": p} for d, p in ratios.items()]
    return pd.DataFrame(rows)


def bimix_losses(files: Files) -> pd.DataFrame:
    """Per-domain validation cross-entropy (the source's `ppls`, in fact log-perplexity) every 10,000 steps
    to 200,000 of a ~120M model, with the domain's proportion; ``avg`` is the unweighted mean of domains."""
    parts = []
    for corpus in BIMIX_CORPORA:
        ppls = _pickle(files[f"raw_data/bimix-law/{corpus}/ppls.pkl"])
        ratios = _pickle(files[f"raw_data/bimix-law/{corpus}/ratios.pkl"])
        for mixture, frame in ppls.items():
            long = frame.melt(id_vars="global_step", var_name="domain", value_name="loss")
            parts.append(pd.DataFrame({"corpus": corpus, "mixture": mixture, "step": long["global_step"],
                                       "domain": long["domain"], "proportion": long["domain"].map(ratios[mixture]),
                                       "loss": long["loss"]}))
    return pd.concat(parts, ignore_index=True)
