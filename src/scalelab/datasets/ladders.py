"""Builders of the loss-ladder tables: raw upstream files -> the tidy tables the back-tests read.

Each builder takes ``files`` (the path inside the source repository -> the verified local file) and
returns a DataFrame; the registry writes it with the dataset's float format. The derivations follow
each source's own documentation; where we chose, the choice is written beside the code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

Files = dict[str, Path]


def _one(files: Files) -> pd.DataFrame:
    (path,) = files.values()
    return pd.read_csv(path)


def chinchilla_epoch(files: Files) -> pd.DataFrame:
    """Besiroglu et al. 2024's digitisation of Hoffmann et al. 2022, Figure 4, as published (245 rows;
    tokens = Training FLOP / (6 Model Size); their replication drops the 5 highest-loss points)."""
    return _one(files)


# --- (Mis)Fitting Scaling Laws (Li, Kudugunta, Zettlemoyer, ICLR 2025) -------------------------------------

MISFITTING_COLUMNS = {"model": "model", "N": "N", "N_no_emb": "N_non_embedding", "D": "D", "C": "C",
                      "C4 Eval Loss": "loss", "peak_lr": "peak_lr", "total_steps": "total_steps"}


def _misfitting(path: Path) -> pd.DataFrame:
    d = pd.read_csv(path).drop(columns="loss")  # equal to `C4 Eval Loss` in every row
    return d.assign(C=d["C"].astype(float))  # FLOPs past int64's range


def misfitting_final(files: Files) -> pd.DataFrame:
    """One row per final checkpoint. loss = `C4 Eval Loss` (the column the paper's code fits); the 21
    reruns of a (model, D, peak_lr) in another sweep are kept, told apart by ``sweep``."""
    d = _misfitting(files["data/scaling_results_last_ckpt_only.csv"])
    out = d.rename(columns=MISFITTING_COLUMNS)[[*MISFITTING_COLUMNS.values(), "sweep"]]
    return out.sort_values(["N", "D", "peak_lr", "sweep"], kind="mergesort").reset_index(drop=True)


def misfitting_curves(files: Files) -> pd.DataFrame:
    """Every saved checkpoint; step = `current_steps`, step_fraction = `portion_steps_elapsed` (two
    250-step runs reach 1.024 in the source: kept as is)."""
    d = _misfitting(files["data/scaling_results.csv"])
    out = d.rename(columns={**MISFITTING_COLUMNS, "current_steps": "step", "portion_steps_elapsed": "step_fraction"})
    out = out[[*MISFITTING_COLUMNS.values(), "step", "step_fraction", "sweep"]]
    return out.sort_values(["N", "total_steps", "peak_lr", "sweep", "step"], kind="mergesort").reset_index(drop=True)


# --- ColPret (Choshen, Zhang, Andreas 2024) ------------------------------------------------------------------

# OPT's (layers, width): Zhang et al. 2022, Table 1
OPT_SHAPES = {"125m": (12, 768), "1.3b": (24, 2048), "6.7b": (32, 4096), "13b": (40, 5120), "30b": (48, 7168),
              "175b": (96, 12288)}
OPT_VOCAB, OPT_POSITIONS = 50_272, 2_050


def opt_params(layers: int, width: int) -> int:
    """OPT's exact count: per layer 4 d^2 + 4 d attention, 8 d^2 + 5 d MLP, 4 d of two LayerNorms
    (12 d^2 + 13 d); the tied embedding, 2,050 learned positions and the final LayerNorm (2 d).
    125,239,296 for 125M, 1,315,758,080 for 1.3B."""
    return layers * (12 * width**2 + 13 * width) + (OPT_VOCAB + OPT_POSITIONS + 2) * width


def colpret_opt(files: Files) -> pd.DataFrame:
    """Training trajectories of OPT (Xia et al. 2022). `num_token` is log10 tokens; loss = ln(ppl)."""
    d = pd.read_csv(files["aggregated_eval/opt_trajectories.csv"])
    size = d["model_size"]
    return pd.DataFrame({
        "family": "opt", "model": "opt-" + size, "N": [opt_params(*OPT_SHAPES[s]) for s in size],
        "D": np.round(10 ** d["num_token"]).astype(np.int64), "loss": np.log(d["ppl"]), "step": d["steps"],
        "ppl": d["ppl"], "N_nominal": size})


def _gpt3_sizes(path: Path) -> dict[str, int]:
    """GPT-3 Table 2.1 as ColPret stores it: model name -> nominal parameters ("GPT-3 XL" -> 1.3e9)."""
    sheet = pd.read_excel(path, header=None)
    out = {}
    for name, size in zip(sheet[0], sheet[1]):
        key = str(name).removeprefix("GPT-3 ").split(" or ")[0].lower()
        scale = {"M": 1e6, "B": 1e9}[size[-1]]
        out[key] = int(round(float(size[:-1]) * scale))
    return out


def colpret_gpt3(files: Files) -> pd.DataFrame:
    """GPT-3's digitised training curves (Brown et al. 2020): one row per point, ``curve`` val or
    train; the source's `step` is billions of tokens elapsed; N is the nominal size."""
    d = pd.read_csv(files["raw_data/gpt3/extracted.csv"])
    sizes = _gpt3_sizes(files["raw_data/gpt3/gpt3_metadata.xlsx"])
    parts = []
    for curve, col in (("train", "train_loss"), ("val", "val_loss")):
        g = d[d[col].notna()]
        parts.append(pd.DataFrame({"family": "gpt3", "model": "gpt3-" + g["model"], "N": g["model"].map(sizes),
                                   "D": np.round(g["step"] * 1e9).astype(np.int64), "loss": g[col], "curve": curve,
                                   "tokens_billions_digitised": g["step"]}))
    out = pd.concat(parts)
    return out.sort_values(["N", "curve", "D"], kind="mergesort").reset_index(drop=True)


# the exact sizes behind the 2.8B / 4.2B / 8.7B labels (those the datablations contour data use)
DATABLATIONS_N = {"2.8B": 2_810_000_000, "4.2B": 4_246_500_000, "8.7B": 8_670_000_000}


def colpret_datablations(files: Files) -> pd.DataFrame:
    """Muennighoff et al. 2023's loss curves (TensorBoard exports): D = `token_num`, unique_tokens =
    `tokens_per_epoch`; the Hugging Face repository and TensorBoard id of each run kept."""
    d = pd.read_csv(files["aggregated_eval/datablations_losses.csv"])
    tb = d["model_args"].str.extract(r"'tensorboard': '([^']+)'")[0]
    out = pd.DataFrame({
        "family": "datablations",
        "model": "gpt2-" + d["num_params"] + "-" + d["data"] + "-" + d["epochs"].astype(str) + "ep",
        "N": d["num_params"].map(DATABLATIONS_N), "D": d["token_num"], "loss": d["loss"], "data": d["data"],
        "epochs": d["epochs"], "unique_tokens": d["tokens_per_epoch"].round().astype(np.int64),
        "hf_repo": d["checkpoint"].str.removeprefix("https://huggingface.co/"), "tensorboard_id": tb})
    return out.sort_values(["N", "data", "epochs", "D"], kind="mergesort").reset_index(drop=True)


# --- SLD (Lin et al. 2025) ------------------------------------------------------------------------------------

def datablations_constrained(files: Files) -> pd.DataFrame:
    """Muennighoff et al.'s final losses as SLD stores them. SLD's `unique_tokens` and `tokens` labels are
    swapped (its run ids `<params><tokens><unique>` and ColPret's contour data agree on that): D = SLD
    `unique_tokens`, unique_tokens = SLD `tokens`, epochs = D / unique_tokens."""
    d = _one(files)
    out = pd.DataFrame({"run": d["id"], "N": d["params"].round().astype(np.int64),
                        "D": d["unique_tokens"].round().astype(np.int64),
                        "unique_tokens": d["tokens"].round().astype(np.int64)})
    out["epochs"] = out["D"] / out["unique_tokens"]
    out["loss"] = d["loss"]
    return out.sort_values(["N", "D", "unique_tokens"], kind="mergesort").reset_index(drop=True)


def steplaw_grid(files: Files) -> pd.DataFrame:
    """StepFun's lr x batch grid (Li et al. 2025) as SLD stores it. bs counts sequences of 2,048 tokens.
    D_suspect: 117 rows of N = 2^30 with D = 1e13 and no architecture, steps or run name."""
    d = _one(files)
    out = pd.DataFrame({"N_non_embedding": d["N"], "D": d["D"], "lr": d["lr"], "bs_seqs": d["bs"],
                        "tokens_per_batch": d["bs"] * 2048, "steps": d["ti"], "loss": d["loss"],
                        "smooth_loss": d["smooth loss"]})
    for ours, theirs in (("d_model", "h"), ("d_ff", "ffnh"), ("n_heads", "numh"), ("n_layers", "numl"),
                         ("exp_name", "exp_name")):
        out[ours] = d[theirs]
    out["D_suspect"] = (out["N_non_embedding"] == 2**30) & (out["D"] == 1e13) & out["exp_name"].isna()
    return out.sort_values(["N_non_embedding", "D", "bs_seqs", "lr"], kind="mergesort").reset_index(drop=True)


# --- Open-Athena's IsoFLOP collection (arXiv 2603.22339) -----------------------------------------------------

HELD_BACK_SOURCES = ("llama_3",)  # evaluation data for allocation forecasts: never in the public table


def isoflops_open_athena(files: Files) -> pd.DataFrame:
    """IsoFLOP sweeps of several studies (Epoch's and ml-scalefit's Chinchilla points, Marin's 2026-03
    ladders, the (Mis)Fitting sweep), with the curators' ``outlier`` flag and its ``reason``; the Llama 3
    rows of the same file are left out (kept for evaluation, never for tuning)."""
    d = _one(files)
    return d[~d["source"].isin(HELD_BACK_SOURCES)].reset_index(drop=True)
