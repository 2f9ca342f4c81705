"""Well-known models: parameters (total / active), training tokens, compute, and how far each sits
from compute-optimal under a chosen law. Every figure carries its source."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PublishedModel:
    name: str
    params_total: float
    params_active: float
    tokens: float | None  # None: not disclosed
    source: str


MODELS = [
    PublishedModel("GPT-3 175B", 175e9, 175e9, 300e9, "Brown et al. 2020, Sec. 2.2 and Table D.1"),
    PublishedModel("Gopher 280B", 280e9, 280e9, 300e9, "Rae et al. 2021, Table 1"),
    PublishedModel("Chinchilla 70B", 70e9, 70e9, 1.4e12, "Hoffmann et al. 2022, Table 1"),
    PublishedModel("PaLM 540B", 540.35e9, 540.35e9, 780e9, "Chowdhery et al. 2022, Table 2 and Sec. 3"),
    PublishedModel("LLaMA 7B", 6.7e9, 6.7e9, 1.0e12, "Touvron et al. 2023a, Table 2"),
    PublishedModel("LLaMA 65B", 65.2e9, 65.2e9, 1.4e12, "Touvron et al. 2023a, Table 2"),
    PublishedModel("Llama 2 7B", 6.74e9, 6.74e9, 2.0e12, "Touvron et al. 2023b, Table 1"),
    PublishedModel("Llama 2 70B", 68.98e9, 68.98e9, 2.0e12, "Touvron et al. 2023b, Table 1"),
    PublishedModel("Llama 3 8B", 8.03e9, 8.03e9, 15e12, "Meta 2024, Llama 3 model card"),
    PublishedModel("Llama 3 70B", 70.6e9, 70.6e9, 15e12, "Meta 2024, Llama 3 model card"),
    PublishedModel("Llama 3.1 405B", 405e9, 405e9, 15.6e12, "Dubey et al. 2024, Sec. 3.3 (3.8e25 FLOPs)"),
    PublishedModel("Mistral 7B", 7.24e9, 7.24e9, None, "Jiang et al. 2023 (training tokens not disclosed)"),
    PublishedModel("Mixtral 8x7B", 46.7e9, 12.9e9, None, "Jiang et al. 2024 (training tokens not disclosed)"),
    PublishedModel("DeepSeek-V3", 671e9, 37e9, 14.8e12, "DeepSeek-AI 2024, Sec. 1 and 4"),
]


def models_table(law=None) -> list[dict]:
    """One row per model; with a Chinchilla-form law, its compute-optimal N*, D* at the same compute."""
    rows = []
    for m in MODELS:
        r = {"name": m.name, "params_total": m.params_total, "params_active": m.params_active,
             "tokens": m.tokens, "source": m.source, "tokens_for_20_per_param": 20.0 * m.params_active}
        if m.tokens is not None:
            C = 6.0 * m.params_active * m.tokens
            r.update(compute_flops=C, tokens_per_param=m.tokens / m.params_active)
            if law is not None:
                a = law.allocate(C)
                n_opt, d_opt = float(np.atleast_1d(a["N_opt"])[0]), float(np.atleast_1d(a["D_opt"])[0])
                r.update(N_opt=n_opt, D_opt=d_opt, optimal_tokens_per_param=d_opt / n_opt,
                         params_over_optimal=m.params_active / n_opt)
                if a.get("loss") is not None:
                    r["loss_at_optimum"] = float(np.atleast_1d(a["loss"])[0])
                if law.form != "allocation":  # an approach-2 fit has no loss surface
                    r["predicted_loss"] = float(np.atleast_1d(law.predict(m.params_active, m.tokens))[0])
        rows.append(r)
    return rows
