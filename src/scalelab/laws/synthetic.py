"""Synthetic run tables drawn from a known law, to check that a fitting set-up recovers the truth
(and how many runs it needs) before spending compute."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scalelab.laws.law import FittedLaw


def isoflop_table(law: FittedLaw, budgets, sizes_per_budget: int = 7, span: float = 8.0, noise: float = 0.01,
                  seed: int = 0, shift_dex: float = 0.0) -> pd.DataFrame:
    """For each budget C, ``sizes_per_budget`` model sizes log-spaced over a factor ``span`` around the
    law's N*(C) (moved ``shift_dex`` decades off-centre); D = C / (6N); loss = law * exp(noise * N(0, 1))."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in budgets:
        n_opt = float(law.allocate(C)["N_opt"][0]) * 10.0**shift_dex
        for i, N in enumerate(n_opt * np.geomspace(1 / np.sqrt(span), np.sqrt(span), sizes_per_budget)):
            D = C / (6 * N)
            loss = float(law.predict(N, D)) * float(np.exp(noise * rng.standard_normal()))
            rows.append({"run": f"C{C:.0e}-{i}", "N": N, "D": D, "C": C, "budget": C, "loss": loss})
    return pd.DataFrame(rows)
