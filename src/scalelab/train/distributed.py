"""Data parallelism for one run, kept apart from the single-device model and loop (as torchtitan does).

    torchrun --nproc-per-node K -m scalelab.train CONFIG.toml --out RUN [key=value ...]

* ``train.parallel = "ddp"`` (default under torchrun): every rank holds the model; gradients are
  averaged by DistributedDataParallel. ``"fsdp"``: FSDP2 ``fully_shard`` on every block and the root,
  for models whose weights and AdamW state do not fit one device.
* The global batch is what the config says (``train.batch_size`` sequences per micro-step); each rank
  takes its contiguous slice of the batch a single process would draw at (seed, step, micro). So K
  ranks see exactly the tokens one process sees, and the loss curve is the same up to float rounding.
* Rank 0 alone writes metrics, checkpoints and the summary. Checkpoints hold full (unsharded) model and
  optimizer states, so a run resumes under any K, or without torchrun.
* Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from scalelab.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (or return a single-process info)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return DistInfo(rank, world, local)


def local_device(device: str, info: DistInfo) -> str:
    return f"cuda:{info.local_rank}" if info.enabled and device == "cuda" else device


def check_batch(batch_size: int, info: DistInfo) -> int:
    if batch_size % info.world:
        raise UserError(f"train.batch_size={batch_size} is the global batch and must divide over "
                        f"{info.world} ranks; use a multiple of {info.world}")
    return batch_size // info.world


def shard(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (B, ...) -> (B / world, ...)."""
    if not info.enabled:
        return x
    b = x.shape[0] // info.world
    return x[info.rank * b:(info.rank + 1) * b]


def wrap(model: torch.nn.Module, mode: str, info: DistInfo, device: str) -> torch.nn.Module:
    """The module to run forward/backward through: the model itself, DDP around it, or FSDP2 in place."""
    if not info.enabled:
        return model
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.layers:
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[info.local_rank] if device.startswith("cuda") else None)


def no_sync(module: torch.nn.Module, last_micro: bool):
    """Skip DDP's gradient all-reduce on all but the last micro-batch of a step."""
    if not last_micro and hasattr(module, "no_sync"):
        return module.no_sync()
    return nullcontext()


def mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def full_state(model, optimizer, mode: str, info: DistInfo):
    """FSDP: gather full states for a checkpoint -> (a plain CPU copy of the model, the optimizer state
    keyed by parameter name) on rank 0, (None, None) on the others. Other modes: None (save as is)."""
    if mode != "fsdp" or not info.enabled:
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    msd, osd = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not info.is_main:
        return None, None
    plain = type(model)(model.cfg)
    plain.load_state_dict(msd)
    return plain, osd


def load_optimizer_full(model, optimizer, osd: dict) -> None:
    """Load an optimizer state keyed by parameter name (written under FSDP) into any model/optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, osd, options=StateDictOptions(full_state_dict=True))


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
