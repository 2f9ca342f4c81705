"""Training FLOPs and utilisation.

* C = 6 N D (Kaplan et al. 2020): forward 2N + backward 4N FLOPs per token, N = *active* parameters.
* The exact per-token count with attention is `ModelConfig.flops_per_token_exact` (model FLOPs).
* MFU (Chowdhery et al. 2022, Appendix B): achieved model FLOP/s over the peak, where model FLOPs
  per token = 6N + 12 L H Q T (attention included, no recomputation).
* HFU counts the FLOPs the hardware really executes: with full activation recomputation the forward
  runs twice, 8N instead of 6N per token (selective recomputation adds only the attention core).
"""

from __future__ import annotations


def train_flops_6nd(num_params_active: float, tokens: float) -> float:
    return 6.0 * num_params_active * tokens


def palm_flops_per_token(num_params: float, n_layers: int, n_heads: int, head_dim: int, seq_len: int) -> float:
    """Model FLOPs per token as the PaLM paper defines them for MFU: 6N + 12 L H Q T."""
    return 6.0 * num_params + 12.0 * n_layers * n_heads * head_dim * seq_len


def mfu(tokens_per_s: float, flops_per_token: float, n_devices: int, peak_flops_per_device: float) -> float:
    return tokens_per_s * flops_per_token / (n_devices * peak_flops_per_device)


def hfu(tokens_per_s: float, flops_per_token: float, n_devices: int, peak_flops_per_device: float,
        recompute: str = "none", attention_flops_per_token: float = 0.0) -> float:
    """Hardware FLOPs utilisation. recompute: none | selective (attention core again) | full (the
    whole forward again: (6N + attn) * 4/3)."""
    extra = {"none": 0.0, "selective": attention_flops_per_token / 3.0, "full": flops_per_token / 3.0}
    return tokens_per_s * (flops_per_token + extra[recompute]) / (n_devices * peak_flops_per_device)
