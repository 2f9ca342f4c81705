"""Where a result came from: scalelab's version and git commit, Python, torch, CUDA and the device,
recorded in every run's ``summary.json`` and a ladder's store, so results can be compared across
machines (and a dirty working tree is visible)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import scalelab


def git_state(path: Path | None = None) -> dict:
    """{"commit", "dirty"} of the git checkout holding scalelab's source, or {} (an installed wheel)."""
    where = str(path or Path(scalelab.__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "dirty": bool(status.strip())}


def environment(device: str | None = None) -> dict:
    """Versions and hardware. torch is described only if it is already imported (this module never
    imports it: `fit` and `plan` record their environment without it)."""
    env = {"scalelab": scalelab.__version__, **{f"git_{k}": v for k, v in git_state().items()},
           "python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine()}
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch"] = torch.__version__
        env["cuda"] = torch.version.cuda
        if device is not None:
            env["device"] = device
            if device.startswith("cuda") and torch.cuda.is_available():
                env["device_name"] = torch.cuda.get_device_name(device)
                env["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return env
