"""Checkpoints written atomically, with everything needed for exact resume.

    RUN/checkpoints/step_00000100/model.safetensors   weights
                                  optimizer.pt        AdamW moments and step counts
                                  state.json          step, tokens seen, RNG state, metrics so far
    RUN/checkpoints/LATEST                            name of the newest complete checkpoint

A checkpoint is built in a hidden temporary directory and renamed into place, then LATEST is
replaced atomically: a crash at any moment leaves the previous checkpoint intact and pointed to.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(run_dir: Path, step: int, model, optimizer, state: dict, keep: int = 2,
                    optimizer_state: dict | None = None) -> Path:
    """``optimizer_state``: a full optimizer state keyed by parameter name (FSDP), saved as optimizer_full.pt."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    final = root / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    save_model(model, str(tmp / "model.safetensors"))  # handles tied (shared) tensors
    if optimizer_state is not None:
        torch.save(optimizer_state, tmp / "optimizer_full.pt")
    else:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state))
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    atomic_write_text(root / "LATEST", name)
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


def seed_from(ckpt: Path, run_dir: Path) -> None:
    """Start run_dir from another run's checkpoint (a WSD cooldown branch)."""
    root = Path(run_dir) / "checkpoints"
    keep_copy(ckpt, root / Path(ckpt).name)
    atomic_write_text(root / "LATEST", Path(ckpt).name)


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for p in done[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".step_*"):  # leftovers of a crash mid-write
        shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    root = Path(run_dir) / "checkpoints"
    marker = root / "LATEST"
    if marker.exists():
        p = root / marker.read_text().strip()
        if (p / "state.json").exists():
            return p
    done = sorted(p for p in root.glob("step_*") if (p / "state.json").exists())
    return done[-1] if done else None


def load_checkpoint(path: Path, model, optimizer=None) -> dict:
    load_model(model, str(Path(path) / "model.safetensors"))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(Path(path) / "optimizer.pt", weights_only=True))
    return json.loads((Path(path) / "state.json").read_text())
