"""Published scaling laws, selectable by name. Each carries its source and conventions.

Losses are in nats per token of each paper's own tokenizer and data, so absolute values do not
transfer between corpora; exponents and allocations are what carry over.
"""

from __future__ import annotations

from pathlib import Path

from scalelab.errors import UserError
from scalelab.laws.forms import MUENNIGHOFF_REPETITION
from scalelab.laws.law import FittedLaw

PUBLISHED: dict[str, FittedLaw] = {
    "kaplan2020": FittedLaw(
        form="kaplan", approach="published",
        params={"Nc": 6.4e13, "Dc": 1.8e13, "alpha_N": 0.076, "alpha_D": 0.103},
        info={"source": "Kaplan et al. 2020, Scaling Laws for Neural Language Models, Table 2 (fit of eq. 1.5)",
              "param_convention": "non_embedding", "data": "WebText2, GPT-2 BPE"}),
    "hoffmann2022": FittedLaw(
        form="chinchilla", approach="published",
        params={"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28},
        info={"source": "Hoffmann et al. 2022, Training Compute-Optimal LLMs, eq. 10 (rounded constants)",
              "param_convention": "total", "data": "MassiveText"}),
    "hoffmann2022-unrounded": FittedLaw(
        form="chinchilla", approach="published",
        params={"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.3392, "beta": 0.2849},
        info={"source": "Hoffmann et al. 2022, exponents as given in the paper's TeX source, reported by "
                        "Besiroglu et al. 2024 (Sec. 4)", "param_convention": "total", "data": "MassiveText"}),
    "besiroglu2024": FittedLaw(
        form="chinchilla", approach="published",
        params={"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658},
        info={"source": "Besiroglu et al. 2024, Chinchilla Scaling: A replication attempt, eq. 4 (refit of "
                        "the 240 points digitised from Hoffmann et al. Fig. 4)", "param_convention": "total",
              "data": "MassiveText (digitised)"}),
    "muennighoff2023": FittedLaw(
        form="data_constrained", approach="published",
        params={"E": 1.87, "A": 521.0, "B": 1488.0, "alpha": 0.353, "beta": 0.353, **MUENNIGHOFF_REPETITION},
        info={"source": "Muennighoff et al. 2023, Scaling Data-Constrained Language Models, eq. 5 and Sec. 3",
              "param_convention": "total", "data": "C4",
              "usage": "predict(N, D, unique_tokens=U) for D tokens drawn from U unique tokens"}),
}


def get_law(name_or_path: str) -> FittedLaw:
    """A built-in law by name, or a fit file written by `scalelab fit --out`."""
    if name_or_path in PUBLISHED:
        return PUBLISHED[name_or_path]

    if Path(name_or_path).exists():
        return FittedLaw.load(name_or_path)
    raise UserError(f"unknown law {name_or_path!r}: not a fit file, nor one of {sorted(PUBLISHED)}")
