"""Where a law was measured, and a one-line warning when a question lies far outside it: a forecast
decades past the fitted compute, or a unique-token supply no data-constrained run ever had, is a number
the law produces, not one anything has checked."""

from __future__ import annotations

import math

MAX_EXTRAPOLATION = 1e3  # 3 decades of compute past the largest fitted run
LARGEST_RUN_FLOPS = 5e26  # about the largest training runs reported by 2025 (Epoch AI's database)
# Muennighoff et al. 2023's runs (the public dataset datablations-final): unique tokens 1e8 to 1.78e11
UNIQUE_TOKENS_MEASURED = (1e8, 1.78e11)


def compute_warning(law, C: float) -> str | None:
    """A warning when ``C`` lies more than 3 decades past the law's fitted compute (or, for a law that
    does not record its range, past the largest training runs to date)."""
    c_fit = law.info.get("C_max_fitted")
    if c_fit and C / c_fit > MAX_EXTRAPOLATION:
        return (f"C = {C:.3g} FLOPs is {math.log10(C / c_fit):.0f} decades past the largest compute this law was "
                f"fitted to ({c_fit:.3g}): what it gives there is extrapolation, not measurement")
    if not c_fit and C > 20 * LARGEST_RUN_FLOPS:
        return (f"C = {C:.3g} FLOPs is far past any training run to date (~{LARGEST_RUN_FLOPS:.0e}): the law was "
                "never measured there")
    return None


def unique_tokens_warning(unique_tokens: float) -> str | None:
    lo, hi = UNIQUE_TOKENS_MEASURED
    if not lo / 10 <= unique_tokens <= hi * 100:
        return (f"{unique_tokens:.3g} unique tokens is far outside the data-constrained runs the repetition terms "
                f"were measured on ({lo:.0e} to {hi:.2g} unique tokens): the answer is extrapolated")
    return None
