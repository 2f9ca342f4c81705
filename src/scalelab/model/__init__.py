"""The decoder-only transformer family: config and exact counts, layers, MoE, the model, HF interop."""

from scalelab.model.config import ModelConfig, MoEConfig

__all__ = ["ModelConfig", "MoEConfig"]
