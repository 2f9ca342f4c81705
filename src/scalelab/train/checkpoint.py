"""Checkpoints written atomically, with everything needed for exact resume.

    RUN/checkpoints/step_00000100/model.safetensors   weights
                                  optimizer.pt        AdamW moments and step counts
                                  state.json          step, tokens seen, RNG state
                                  manifest.json       size and SHA-256 of each file above, written last
    RUN/checkpoints/LATEST                            name of the newest complete checkpoint

A checkpoint is built in a hidden temporary directory and renamed into place, then LATEST is
replaced atomically: a crash at any moment leaves the previous checkpoint intact and pointed to.
Resume checks the manifest and falls back to the newest good checkpoint (`RunDir.latest_checkpoint`);
a failed write (a full disk) removes its partial files and names the last good checkpoint.
Paths come from `RunDir` (rundir.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from scalelab.errors import UserError
from scalelab.io import atomic_write_text
from scalelab.train.rundir import RunDir, checkpoint_name, checkpoint_problem, write_manifest


def save_checkpoint(run: RunDir, step: int, model, optimizer, state: dict, keep: int = 2,
                    optimizer_state: dict | None = None) -> Path:
    """``optimizer_state``: a full optimizer state keyed by parameter name (FSDP), saved as optimizer_full.pt.
    Older checkpoints are pruned only once this one is in place and verified."""
    root = run.checkpoints
    root.mkdir(parents=True, exist_ok=True)
    final = run.checkpoint(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_model(model, str(tmp / "model.safetensors"))  # handles tied (shared) tensors
        if optimizer_state is not None:
            torch.save(optimizer_state, tmp / "optimizer_full.pt")
        else:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state))
        write_manifest(tmp)
    except (OSError, RuntimeError) as e:  # a full disk: torch raises RuntimeError, the rest OSError
        shutil.rmtree(tmp, ignore_errors=True)
        last = run.latest_checkpoint(report=lambda m: None, full=False) if run.has_checkpoint() else None
        why = getattr(e, "strerror", None) or str(e).splitlines()[0]
        raise UserError(f"could not write checkpoint {final}: {why}; the last good checkpoint is "
                        f"{last or 'none'} (free space, then resume with --resume)") from None
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    problem = checkpoint_problem(final, full=False)
    if problem:
        raise UserError(f"checkpoint {final} did not verify after writing ({problem}); older ones are kept")
    atomic_write_text(root / "LATEST", final.name)
    _prune(root, keep)
    return final


def keep_copy(ckpt: Path, dest: Path) -> Path:
    """Copy a checkpoint directory atomically (temporary name, then rename)."""
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(ckpt, tmp)
    os.rename(tmp, dest)
    return dest


def seed_from(ckpt: Path, run: RunDir) -> None:
    """Start ``run`` from another run's checkpoint (a WSD cooldown branch)."""
    step = json.loads((Path(ckpt) / "state.json").read_text())["step"]
    keep_copy(ckpt, run.checkpoint(step))
    atomic_write_text(run.checkpoints / "LATEST", checkpoint_name(step))


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for p in done[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".step_*"):  # leftovers of a crash mid-write
        shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(path: Path, model, optimizer=None) -> dict:
    load_model(model, str(Path(path) / "model.safetensors"))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(Path(path) / "optimizer.pt", weights_only=True))
    return json.loads((Path(path) / "state.json").read_text())
