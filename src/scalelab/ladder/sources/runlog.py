"""`RunLog`: one run as a reader found it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunLog:
    name: str
    source: str
    path: str
    series: dict[str, dict[int, float]]
    """metric key -> {step: value}."""
    config: dict | None = None
    """the model's config (Hugging Face config.json or a scalelab run config), when one was found."""
    params: dict = field(default_factory=dict)
    """flat hyperparameters the tracker logged."""
