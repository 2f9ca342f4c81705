"""Published Hugging Face configs (SOURCES.md says where each comes from): ``scalelab count qwen3-8b``."""

from __future__ import annotations

import json
from pathlib import Path

from scalelab.errors import UserError

HERE = Path(__file__).parent


def names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.json"))


def load(name: str) -> dict:
    """The config dict of a shipped model, by name (e.g. 'deepseek-v3')."""
    path = HERE / f"{name.lower()}.json"
    if not path.is_file():
        raise UserError(f"no shipped config named {name!r} and no such file; shipped: {', '.join(names())}")
    return json.loads(path.read_text())
