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
    PublishedModel("Pythia 1.4B", 1.414647808e9, 1.414647808e9, 300e9, "Biderman et al. 2023, Table 1 (299.9B tokens)"),
    PublishedModel("Phi-3-mini", 3.82e9, 3.82e9, 3.3e12, "Abdin et al. 2024, Sec. 2 (3.8B, 3.3T tokens)"),
    PublishedModel("Gemma 2 9B", 9.24e9, 9.24e9, 8e12, "Gemma Team 2024, Tables 1-2 (8T tokens)"),
    PublishedModel("Qwen2.5 7B", 7.61e9, 7.61e9, 18e12, "Qwen Team 2024, Qwen2.5 report and model card (18T tokens)"),
    PublishedModel("OLMoE-1B-7B", 6.9e9, 1.3e9, 5.1e12, "Muennighoff et al. 2024, Sec. 2 (5.1T tokens)"),
    PublishedModel("OLMo 2 7B", 7.3e9, 7.3e9, 4e12, "OLMo et al. 2024, 2 OLMo 2 Furious, Table 1 (about 4T tokens)"),
    PublishedModel("Gemma 3 4B", 4.3e9, 4.3e9, 4e12, "Gemma Team 2025, Table 1, Sec. 2.2 (4T; with vision)"),
    PublishedModel("Gemma 3 27B", 27.4e9, 27.4e9, 14e12, "Gemma Team 2025, Table 1, Sec. 2.2 (14T; with vision)"),
    PublishedModel("Qwen3 8B", 8.2e9, 8.2e9, 36e12, "Qwen Team 2025, Qwen3 report Sec. 3 (36T tokens)"),
    PublishedModel("Qwen3-30B-A3B", 30.5e9, 3.3e9, 36e12, "Qwen Team 2025, Qwen3 report Sec. 3 (36T tokens)"),
    PublishedModel("Llama 4 Scout", 109e9, 17e9, 40e12, "Meta 2025, Llama 4 model card (~40T tokens; incl. vision)"),
    PublishedModel("Llama 4 Maverick", 400e9, 17e9, 22e12, "Meta 2025, Llama 4 model card (~22T tokens; incl. vision)"),
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
