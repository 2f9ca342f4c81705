"""Published Hugging Face configs (SOURCES.md says where each comes from): ``scalelab count qwen3-8b``."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from scalelab.errors import UserError

HERE = Path(__file__).parent


# Parameters of a multimodal model's other towers (vision encoder, projector), which the analytic reader
# leaves out: counted once by transformers 5.25 on the meta device, so `scalelab count NAME` needs neither
# torch nor transformers for a shipped config; tests/test_architectures.py recounts them with transformers.
OTHER_TOWERS = {"gemma-3-4b": 419_816_304, "llama-4-scout": 871_932_416}


def names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.json"))


def load(name: str) -> dict:
    """The config dict of a shipped model, by name (e.g. 'deepseek-v3')."""
    path = HERE / f"{name.lower()}.json"
    if not path.is_file():
        close = difflib.get_close_matches(name.lower(), names(), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"no shipped config named {name!r} and no such file; {hint}shipped: {', '.join(names())}")
    return json.loads(path.read_text())
