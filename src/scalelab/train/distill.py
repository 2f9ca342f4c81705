"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").

A frozen teacher's next-token distribution is a richer target than the one observed token: the
student is trained on

    loss = (1 - w) * CE(student, data) + w * tau^2 * KL(p_teacher^tau || p_student^tau)       (1)

where p^tau = softmax(logits / tau). The tau^2 factor (Hinton et al., section 2) keeps the soft
term's gradients the same size as tau changes. With a one-hot teacher and tau = 1, KL(onehot || p) =
-log p(target): (1) is the plain cross-entropy whatever w is (tested). Busbridge et al. 2025
("Distillation Scaling Laws") use the same loss; `scalelab lab distill` measures where it pays.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from scalelab.config import DistillConfig
from scalelab.errors import UserError
from scalelab.model.transformer import Transformer
from scalelab.train.checkpoint import load_checkpoint
from scalelab.train.rundir import RunDir


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      temperature: float = 1.0, weight: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Equation (1), averaged over tokens -> (loss, the data's cross-entropy alone).
    logits (B, T, V), targets (B, T)."""
    V = student_logits.size(-1)
    s = student_logits.float().reshape(-1, V)  # (B*T, V)
    t = teacher_logits.float().reshape(-1, V)
    ce = F.cross_entropy(s, targets.reshape(-1))
    kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                  log_target=True, reduction="batchmean")  # sum over the vocabulary, mean over tokens
    return (1 - weight) * ce + weight * temperature ** 2 * kl, ce


def load_teacher(spec: DistillConfig, vocab_size: int, seq_len: int, tokenizer_file: Path,
                 device: str) -> tuple[Transformer | None, int]:
    """The frozen teacher of ``spec`` (None when there is none) and its forward FLOPs per token."""
    if not spec.teacher:
        return None, 0
    run = RunDir.of(Path(spec.teacher).expanduser())
    if not run.config_file.exists():
        raise UserError(f"distill.teacher: {run.path} is not a scalelab run directory (no config.json); "
                        "train the teacher first")
    cfg, ckpt = run.read_config(), run.latest_checkpoint()
    if ckpt is None:
        raise UserError(f"distill.teacher: {run.path} has no checkpoint yet; train the teacher first")
    same_tokens = run.tokenizer_file.exists() and run.tokenizer_file.read_bytes() == Path(tokenizer_file).read_bytes()
    if cfg.model.vocab_size != vocab_size or not same_tokens:
        raise UserError(f"distill.teacher: {run.path} uses another tokenizer; train the student with the "
                        "teacher's [data] settings and model.vocab_size")
    if cfg.model.max_seq_len < seq_len:
        raise UserError(f"distill.teacher: its max_seq_len {cfg.model.max_seq_len} is below train.seq_len={seq_len}")
    teacher = Transformer(cfg.model)
    load_checkpoint(ckpt, teacher)
    return teacher.to(device).eval().requires_grad_(False), cfg.model.forward_flops_per_token(seq_len)
