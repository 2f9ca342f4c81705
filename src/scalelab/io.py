"""Files, torch-free: atomic writes, config files (TOML/JSON) and plain-JSON conversion.

Everything that writes a result (a fit, a summary, a ladder file, a report) goes through
`atomic_write_text`, so a crash never leaves half a file behind.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import tomllib
from contextlib import contextmanager
from pathlib import Path

from scalelab.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp's own files are 0600)


def cache_dir() -> Path:
    """scalelab's cache: tokenized datasets, tokenizers and public data (``$SCALELAB_CACHE``)."""
    return Path(os.environ.get("SCALELAB_CACHE", Path.home() / ".cache" / "scalelab"))


class WriteError(OSError):
    """A result file could not be written (full disk, read-only or missing place); names the file."""


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename it into place."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.chmod(tmp, FILE_MODE)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # a full disk, a read-only or missing place: no temporary file is left behind
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise WriteError(e.errno, e.strerror, str(path)) from None
    return path


def atomic_write_json(path: str | Path, obj) -> Path:
    """``obj`` as indented JSON (numpy scalars and arrays converted by `to_plain`), atomically."""
    return atomic_write_text(path, json.dumps(to_plain(obj), indent=2))


def read_json(path: str | Path, what: str = "file") -> dict:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {p}")
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{p} is not valid JSON ({e}); delete it or restore it from a copy") from None


def json_kind(path: str | Path) -> str | None:
    """The ``kind`` a scalelab JSON file declares (a task forecast, a curve fit, a mixture fit), or None for
    any other file, readable or not."""
    try:
        return json.loads(Path(path).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def read_config_file(path: str | Path, what: str = "config file") -> dict:
    """A .json file as JSON, anything else as TOML; a missing or unparsable file is a UserError."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {p}")
    kind = "JSON" if p.suffix == ".json" else "TOML"
    try:
        return json.loads(p.read_text()) if kind == "JSON" else tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{p} is not valid {kind}: {e}") from None


def to_plain(x):
    """Nested dicts/lists/tuples with numpy scalars and arrays -> plain JSON types."""
    if isinstance(x, dict):
        return {k: to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_plain(v) for v in x]
    if hasattr(x, "tolist"):  # numpy arrays and scalars, torch tensors
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    return x


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one owned by another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def hold_lock(path: str | Path, what: str, shared: bool = False):
    """One writer at a time: an exclusive, non-blocking ``flock`` on ``path`` for the duration, the file
    naming the holder. The kernel drops the lock when its process dies, so a lock left by a killed
    process is taken over without ceremony. ``shared``: many holders that cooperate by other means
    (`ladder run --share`), all excluded by an exclusive holder and excluding it. (flock is per machine:
    on a filesystem shared by several machines it may not exclude a process on another one.)"""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise UserError(f"{what} is in use by {holder}; wait for it to finish or stop it, then run again") from None
    try:
        f.seek(0)
        f.truncate()
        f.write("processes sharing it (ladder run --share)\n" if shared
                else f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def build_atomically(out: Path, fill) -> Path:
    """Return dataset directory ``out``, first building it with ``fill(tmp_dir)`` if it has no manifest:
    built in a hidden sibling and renamed into place, so a crash never leaves a half-written dataset and
    two processes building the same one both end with a complete copy."""
    out = Path(out)
    if (out / "manifest.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{os.getpid()}@{socket.gethostname()}-", dir=out.parent))
    try:
        fill(tmp)
        try:
            os.rename(tmp, out)
        except OSError:  # another process finished the same dataset first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
        return out
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_orphans(parent: Path) -> None:
    """Remove the half-built datasets of builders on this machine that were killed (the pid and host
    in the folder's name: ``.build-PID@HOST-random``), so that killed builds do not pile up."""
    for d in parent.glob(".build-*@*-*"):
        pid, _, rest = d.name[len(".build-"):].partition("@")
        # another machine's folder (a cache on a shared filesystem) is not ours to judge
        if rest.rsplit("-", 1)[0] == socket.gethostname() and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
