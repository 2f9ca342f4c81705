"""The registry of public datasets: where each comes from (repository, pinned commit, files with their
size and sha256 in `files.csv`), its licence and citation, and the builder of its tidy table.

scalelab ships none of this data: every table is built on first use from the files at the pinned
commit, downloaded and verified (`download.py`), and cached with the table built from them.
"""

from __future__ import annotations

import csv
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from scalelab.datasets import ladders, mixtures, pythia
from scalelab.errors import UserError

# bump when a builder changes what it writes: cached tables of the old builders are then rebuilt
BUILD_VERSION = 1


@dataclass(frozen=True)
class Source:
    """A public GitHub repository at a pinned commit."""

    repo: str  # OWNER/NAME
    commit: str  # 40 hex digits
    licence: str

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repo}/tree/{self.commit}"


MISFITTING = Source("hadasah/scaling_laws", "1f3708c0a12df0effb0ee906b1da5f9f0ff4f4f1",
                    "none (no LICENSE file; the README asks to cite the paper)")
COLPRET = Source("IBM/ColPret", "16f23bbe054277ddc4afd07a972dd7cfbe3f48c3", "MIT")
COLPRET_BIMIX = Source("IBM/ColPret", "16f23bbe054277ddc4afd07a972dd7cfbe3f48c3",
                       "Apache-2.0 (its folder's LICENSE; ColPret is MIT)")
SLD = Source("linhaowei1/SLD", "61c9d591b6b11364f27362fd817fcd086d0b0cfd",
             "none (no LICENSE file; the README shows an MIT badge)")
PYTHIA = Source("EleutherAI/pythia", "a19eecb807ec2c79a39ebf18108816e6ffffc1d5", "Apache-2.0")
EPOCH = Source("epoch-research/analyzing-chinchilla", "92258837425e1b5f2851d624287f0120583a3d0e",
               "none (no LICENSE file)")
MPL = Source("thu-yao-01-luo/MultiPowerLaw", "8da9f1902602f3391b971a811e3cc51604541769", "MIT")
REGMIX = Source("sail-sg/regmix", "b004d3a3f39846dcec6b3740da22bcd1ba95a5d0", "MIT")
OPEN_ATHENA = Source("Open-Athena/scaling-law-analysis", "3e0656ee3dce1a2c89aa67691920f5eb9d30f0fc",
                     "none (no LICENSE file)")

CITE = {
    "misfitting": "Li et al. 2025 ((Mis)Fitting Scaling Laws), arXiv:2502.18969",
    "colpret": "Choshen et al. 2024 (ColPret), arXiv:2410.11840",
    "datablations": "Muennighoff et al. 2023, arXiv:2305.16264",
    "sld": "Lin et al. 2025 (SLD), arXiv:2507.21184",
    "pythia": "Biderman et al. 2023 (Pythia), arXiv:2304.01373",
}


@dataclass(frozen=True)
class PublicDataset:
    """One tidy table built from public files. ``paths``: glob patterns of the files it needs, inside
    the source repository; ``float_format``: how its floats are written (the table's precision)."""

    name: str
    table: str  # the tidy table's file name
    source: Source
    paths: tuple[str, ...]
    build: Callable
    citation: str
    about: str
    float_format: str | None = "%.10g"

    def files(self) -> dict[str, str]:
        """``OWNER/REPO/COMMIT/PATH -> sha256`` of every file the table is built from."""
        prefix = f"{self.source.repo}/{self.source.commit}/"
        out = {k: f.sha256 for k, f in registered_files().items() if k.startswith(prefix)
               and any(fnmatch.fnmatchcase(k.removeprefix(prefix), p) for p in self.paths)}
        if not out:
            raise RuntimeError(f"{self.name}: no registered file matches {self.paths}")  # a registry bug
        return out


    def size_bytes(self) -> int:
        return sum(registered_files()[k].size_bytes for k in self.files())


@dataclass(frozen=True)
class RegisteredFile:
    size_bytes: int
    sha256: str


@cache
def registered_files() -> dict[str, RegisteredFile]:
    """Every public file scalelab may fetch: ``OWNER/REPO/COMMIT/PATH -> (bytes, sha256)`` (`files.csv`)."""
    with (resources.files("scalelab.datasets") / "files.csv").open() as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return {r["key"]: RegisteredFile(int(r["bytes"]), r["sha256"]) for r in rows}


_PYTHIA_EVALS = "evals/pythia-v1/pythia-*/zero-shot/*_step*.json"

DATASETS: dict[str, PublicDataset] = {d.name: d for d in (
    PublicDataset("chinchilla-epoch", "chinchilla_epoch_svg_extracted_data.csv", EPOCH,
                  ("data/svg_extracted_data.csv",), ladders.chinchilla_epoch,
                  "Besiroglu et al. 2024, arXiv:2404.10102; Hoffmann et al. 2022, arXiv:2203.15556",
                  "Hoffmann et al.'s 245 IsoFLOP points, digitised from their Figure 4", float_format=None),
    PublicDataset("misfitting-final", "misfitting_open_lm_final.csv", MISFITTING,
                  ("data/scaling_results_last_ckpt_only.csv",), ladders.misfitting_final, CITE["misfitting"],
                  "open_lm sweep, 12M-1B non-embedding, 261 final C4 losses at 1-4 peak lrs"),
    PublicDataset("misfitting-curves", "misfitting_open_lm_curves.csv", MISFITTING, ("data/scaling_results.csv",),
                  ladders.misfitting_curves, CITE["misfitting"], "the same runs at every saved checkpoint"),
    PublicDataset("opt-curves", "colpret_opt.csv", COLPRET, ("aggregated_eval/opt_trajectories.csv",),
                  ladders.colpret_opt, "Xia et al. 2022, arXiv:2212.09803; " + CITE["colpret"],
                  "OPT 125M-175B training trajectories, loss = ln(ppl)"),
    PublicDataset("gpt3-curves", "colpret_gpt3.csv", COLPRET,
                  ("raw_data/gpt3/extracted.csv", "raw_data/gpt3/gpt3_metadata.xlsx"), ladders.colpret_gpt3,
                  "Brown et al. 2020, arXiv:2005.14165; " + CITE["colpret"],
                  "GPT-3 125M-175B train and validation curves, digitised"),
    PublicDataset("datablations-curves", "colpret_datablations.csv", COLPRET,
                  ("aggregated_eval/datablations_losses.csv",), ladders.colpret_datablations,
                  CITE["datablations"] + "; " + CITE["colpret"], "2.8B / 4.2B / 8.7B on C4 and OSCAR, 1-44 epochs"),
    PublicDataset("datablations-final", "datablations_constrained.csv", SLD,
                  ("data/data_constrained_scaling_law/data.csv",), ladders.datablations_constrained,
                  CITE["datablations"] + "; " + CITE["sld"], "182 final losses, 7M-8.7B, up to 9,000 epochs"),
    PublicDataset("steplaw-grid", "steplaw_lr_bs.csv", SLD, ("data/lr_scaling_law/dense_lr_bs_loss.csv",),
                  ladders.steplaw_grid, "Li et al. 2025 (Step Law), arXiv:2503.04715; " + CITE["sld"],
                  "StepFun's lr x batch grid, 215M-1.07B non-embedding (117 rows D_suspect)"),
    PublicDataset("pythia-evals-final", "pythia_downstream_final.csv", PYTHIA, ("evals/pythia-v1/*_step143000.json",),
                  pythia.downstream_final, CITE["pythia"], "Pythia 70M-12B (x2 deduped), 87 zero-shot tasks, final"),
    PublicDataset("pythia-evals-curves", "pythia_downstream_curves.csv", PYTHIA, (_PYTHIA_EVALS,),
                  pythia.downstream_curves, CITE["pythia"], "the same 16 models at 27 checkpoints, 8 tasks"),
    PublicDataset("mpl-curves", "mpl_loss_curves.csv", MPL, ("loss_curve_repo/csv_*/*.csv",), mixtures.mpl_curves,
                  "Luo et al. 2025 (Multi-Power Law), arXiv:2503.12811",
                  "25M-400M loss curves under 9 lr schedules, with the lr", float_format=None),
    PublicDataset("regmix-pile", "regmix_pile_mixtures_losses.csv", REGMIX, ("data/*.csv",), mixtures.regmix_pile,
                  "Liu et al. 2024 (RegMix), arXiv:2407.01492",
                  "1,088 proxy runs (1M, 60M, 1B): 17 Pile-domain weights, 13 domain losses", float_format="%.6g"),
    PublicDataset("bimix-losses", "bimix_domain_losses.csv", COLPRET_BIMIX, ("raw_data/bimix-law/*/*.pkl",),
                  mixtures.bimix_losses, "Ge et al. 2024 (BiMix), arXiv:2405.14908; " + CITE["colpret"],
                  "per-domain losses of 6 mixtures on the Pile and SlimPajama, every 10k steps", float_format="%.6g"),
    PublicDataset("bimix-mixtures", "bimix_mixtures.csv", COLPRET_BIMIX, ("raw_data/bimix-law/*/ratios.pkl",),
                  mixtures.bimix_mixtures, "Ge et al. 2024 (BiMix), arXiv:2405.14908; " + CITE["colpret"],
                  "the 6 mixtures' domain proportions", float_format="%.8g"),
    PublicDataset("isoflops-open-athena", "open_athena_isoflops_public.csv", OPEN_ATHENA,
                  ("data/isoflops/transform/isoflops.csv",), ladders.isoflops_open_athena,
                  "Open-Athena 2026, arXiv:2603.22339 (and each source's paper)",
                  "IsoFLOP sweeps: Chinchilla (2 copies), Marin 2026-03 (3 datasets), (Mis)Fitting; outliers flagged",
                  float_format=None),
)}


def get(name: str) -> PublicDataset:
    if name not in DATASETS:
        raise UserError(f"dataset: unknown public dataset {name!r}; choose from {', '.join(DATASETS)} "
                        "(`scalelab data list`)", arg="name")
    return DATASETS[name]
