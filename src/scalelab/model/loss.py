"""Fused, chunked output projection + cross-entropy (the idea of Liger Kernel's
FusedLinearCrossEntropy, in plain PyTorch).

The standard path materialises logits (tokens x vocab, fp32), a log-softmax, and in backward a
gradient of the same size: at d_model 64 and vocab 4096 that is ~38% of a CPU training step, all
memory traffic (docs/LOG.md). Here the loss and both gradients are computed chunk by chunk in the
forward pass, so no tokens x vocab tensor larger than one chunk ever exists:

    logits_c = h_c W^T;  loss += logsumexp(logits_c) - logits_c[target]
    dlogits_c = softmax(logits_c) - onehot(target)             (in place; 1/N applied once, in backward)
    dh_c = dlogits_c W;  dW += dlogits_c^T h_c

Backward only scales the stored gradients by the incoming gradient. Same matmul count as the
standard path (forward logits, dh, dW); tested equal to F.cross_entropy in loss and gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.library.custom_op("scalelab::accumulate_mm", mutates_args=("acc",))
def _accumulate_mm(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b in place. An opaque custom op, so that torch.compile keeps it in place: traced,
    `addmm_` is functionalised into an out-of-place addmm that first copies the whole (V, D)
    accumulator, once per chunk (~3.5 ms a chunk at vocab 4096 x d_model 256 here). With bf16
    operands the product runs in bf16 (fp32 accumulation inside the GEMM, as autocast's own
    weight gradient does) and is added to the fp32 accumulator."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    else:
        acc.add_(a @ b)


def _matmul_dtype(h: torch.Tensor) -> torch.dtype:
    """The dtype of the weight gradient's product: bf16/fp16 on CUDA when the step computes in it
    (the tensors' dtype or autocast's), else fp32."""
    if h.device.type != "cuda":
        return torch.float32
    low = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else h.dtype
    return low if low in (torch.bfloat16, torch.float16) else torch.float32


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int):
        n = h.shape[0]
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros_like(weight, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        mm = _matmul_dtype(h)  # fp32 on CPU; bf16 on CUDA in bf16 (an fp32 product there ran 7x slower)
        for s in range(0, n, chunk):
            hc, tc = h[s:s + chunk], targets[s:s + chunk]
            logp = torch.log_softmax((hc @ weight.t()).float(), dim=-1)  # (c, V), one pass
            total -= logp.gather(1, tc[:, None]).sum()
            probs = logp.exp_()  # softmax, in place
            probs[torch.arange(len(tc), device=h.device), tc] -= 1.0  # d(sum of losses) / d logits
            grad_h[s:s + chunk] = probs.to(weight.dtype) @ weight
            _accumulate_mm(grad_w, probs.t().to(mm), hc.to(mm))  # grad_w += probs^T h_c
        # the 1/n of the mean is applied in backward, on (N, D) and (V, D) rather than on every chunk
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        ctx.n = n
        return total / n

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_out / ctx.n
        return grad_h * scale, grad_w * scale, None, None


def default_chunk(vocab_size: int, device_type: str) -> int:
    """Tokens per chunk. CPU: one chunk's logits near 4 MB, and at least 256 tokens: 256 at vocab 4096
    and at 32000. Against a fixed 512 that made the loss 20-35% faster at vocab 4096 (docs/LOG.md); the
    floor of 256 (was 64) comes from timing 64-2048 under ATen's AVX-512 and AVX2 kernels: at vocab
    32000 256 beat 64 by 6% and 24%, at 4096 the two kernels' times were flat or best at 256
    (docs/LOG.md, 2026-12-06). On CUDA the budget is 512 MB, 4096 tokens at vocab 32000: on an H200
    (bf16, d_model 768, 16k tokens) larger chunks ran faster up to no chunking at all, and the budget
    caps the memory one chunk's logits take (docs/LOG.md, 2026-11-30)."""
    if device_type == "cuda":
        return int(min(8192, max(256, 2 ** round(math.log2(2 ** 27 / vocab_size)))))
    return int(min(1024, max(256, 2 ** round(math.log2(2 ** 20 / vocab_size)))))  # elements of one fp32 chunk


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of softmax(h W^T) against targets. h (N, D), weight (V, D), targets (N,)."""
    chunk = chunk or default_chunk(weight.shape[0], h.device.type)
    if torch.compiler.is_compiling():  # the loop unrolls into the graph: at most 16 chunks keeps compiles short
        # on a CPU at most 4: compiled, 1024-token chunks beat 256 by 10% / 19% / 14% at d_model 128 / 256 / 512
        # (4096 tokens, vocab 4096, interleaved reps; docs/LOG.md 2026-12-06), where eager time was flat
        chunk = max(chunk, -(-h.shape[0] // (4 if h.device.type == "cpu" else 16)))
    if not (torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)):
        # evaluation: chunked loss only, no gradients to keep
        total = sum(F.cross_entropy((h[s:s + chunk] @ weight.t()).float(), targets[s:s + chunk], reduction="sum")
                    for s in range(0, h.shape[0], chunk))
        return total / h.shape[0]
    return _FusedLinearCrossEntropy.apply(h, weight, targets, chunk)
