"""Pythia's zero-shot evaluations (Biderman et al. 2023, EleutherAI/pythia `evals/pythia-v1/`): one JSON
per (model, checkpoint) -> tidy tables, one row per (model, checkpoint, task, metric).

N: GPT-NeoX with untied input and output embeddings and the 20B tokenizer's 50,277 tokens padded to a
multiple of 128 x the model-parallel size (50,304; 50,432 for 6.9B at MP 2; 50,688 for 12B at MP 4);
non-embedding = L (12 d^2 + 13 d) + 2 d, total = non-embedding + 2 vocab d, from the README's
architecture table. D: every model saw 2,097,152 tokens per step (143,000 steps, 299,892,736,000 tokens).
The standard 1B folder is `pythia-1b-bf16` (the Pythia README: `EleutherAI/pythia-1b` is the one trained
in bf16), labelled pythia-1b; some of its files are named `-5shot` but their configs say zero-shot.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

TOKENS_PER_STEP = 2_097_152
FINAL_STEP = 143_000
# size -> (layers, width, padded vocabulary)
SHAPES = {"70m": (6, 512, 50_304), "160m": (12, 768, 50_304), "410m": (24, 1024, 50_304),
          "1b": (16, 2048, 50_304), "1.4b": (24, 2048, 50_304), "2.8b": (32, 2560, 50_304),
          "6.9b": (32, 4096, 50_432), "12b": (36, 5120, 50_688)}
# the 8 headline tasks whose curves are kept (the MMLU and CrowS-Pairs curves stay in the JSONs)
CURVE_TASKS = ("arc_challenge", "arc_easy", "lambada_openai", "logiqa", "piqa", "sciq", "winogrande", "wsc")
_NAME = re.compile(r"evals/pythia-v1/(?P<folder>pythia-(?P<size>[0-9.]+[mb])(?P<bf16>-bf16)?(?P<dedup>-deduped)?)"
                   r"/zero-shot/[^/]*_step(?P<step>\d+)\.json$")


def params(size: str) -> tuple[int, int]:
    """(total, non-embedding) parameters of a Pythia size: 70M 70,426,624 / 18,915,328."""
    layers, width, vocab = SHAPES[size]
    non_embedding = layers * (12 * width**2 + 13 * width) + 2 * width
    return non_embedding + 2 * vocab * width, non_embedding


def _rows(path: str, local: Path) -> list[dict]:
    m = _NAME.search(path)
    size, deduped = m["size"], bool(m["dedup"])
    total, non_embedding = params(size)
    step = int(m["step"])
    head = {"model": f"pythia-{size}" + ("-deduped" if deduped else ""), "N": total, "D": step * TOKENS_PER_STEP,
            "step": step, "tokens": step * TOKENS_PER_STEP, "N_non_embedding": non_embedding,
            "dataset": "pile-deduped" if deduped else "pile", "source_folder": m["folder"]}
    results = json.loads(local.read_text())["results"]
    return [{**head, "task": task, "metric": metric, "value": value, "stderr": scores.get(f"{metric}_stderr")}
            for task, scores in results.items() for metric, value in scores.items() if not metric.endswith("_stderr")]


def _table(files: dict[str, Path]) -> pd.DataFrame:
    d = pd.DataFrame([r for path, local in files.items() for r in _rows(path, local)])
    order = {f"pythia-{s}{dd}": i for i, (dd, s) in enumerate((dd, s) for dd in ("", "-deduped") for s in SHAPES)}
    return d.assign(_order=d["model"].map(order))


def downstream_final(files: dict[str, Path]) -> pd.DataFrame:
    """Step 143,000: every task (87) and metric in the JSONs."""
    d = _table({p: f for p, f in files.items() if p.endswith(f"_step{FINAL_STEP}.json")})
    d = d.sort_values(["_order", "task", "metric"], kind="mergesort")
    cols = ["model", "N", "D", "task", "metric", "value", "stderr", "N_non_embedding", "dataset", "source_folder"]
    return d[cols].reset_index(drop=True)


def downstream_curves(files: dict[str, Path]) -> pd.DataFrame:
    """All 27 checkpoints, the 8 headline tasks."""
    d = _table(files)
    d = d[d["task"].isin(CURVE_TASKS)].sort_values(["_order", "task", "metric", "step"], kind="mergesort")
    cols = ["model", "N", "D", "task", "metric", "value", "stderr", "step", "tokens", "N_non_embedding", "dataset",
            "source_folder"]
    return d[cols].reset_index(drop=True)
