"""The decoder-only transformer family: config and exact counts, layers, MoE, the model, HF interop."""

from scalelab.model.config import MLAConfig, ModelConfig, MoEConfig

__all__ = ["MLAConfig", "ModelConfig", "MoEConfig"]
