"""Raw files of public datasets: downloaded on first use from their pinned source, verified, cached.

Every file is named by where it lives upstream, ``OWNER/REPO/COMMIT/PATH``, and fetched from
``https://raw.githubusercontent.com/OWNER/REPO/COMMIT/PATH`` through pooch (SciPy's and
scikit-image's downloader: sha256 checked before a file enters the cache, a temporary file removed
when it fails, retries). Nothing is read that does not match its registered sha256.

Where:
- the cache: ``public/`` in scalelab's cache (``$SCALELAB_CACHE``, by default ``~/.cache/scalelab``);
  raw files under ``public/raw/OWNER/REPO/COMMIT/PATH``, built tables under ``public/tables/``.
- a local mirror for offline machines: ``$SCALELAB_DATA_DIR`` (or ``scalelab --data-dir DIR``), a
  folder laid out as ``OWNER/REPO/COMMIT/PATH``; files are copied from it instead of downloaded,
  and verified the same way.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scalelab.errors import UserError
from scalelab.io import cache_dir as scalelab_cache

BASE_URL = "https://raw.githubusercontent.com/"
MIRROR_ENV = "SCALELAB_DATA_DIR"
OFFLINE_FIX = (f"to work offline, point --data-dir (or ${MIRROR_ENV}) at a mirror laid out as "
               "OWNER/REPO/COMMIT/PATH")


def cache_dir() -> Path:
    """Where public data is cached: ``public/`` in scalelab's cache."""
    return scalelab_cache() / "public"


def mirror_dir() -> Path | None:
    """The local mirror, if one is set; a set path that is not a folder is an error, not a fallback."""
    where = os.environ.get(MIRROR_ENV)
    if not where:
        return None
    path = Path(where).expanduser()
    if not path.is_dir():
        raise UserError(f"data-dir: {path} is not a folder; give a mirror laid out as OWNER/REPO/COMMIT/PATH "
                        f"(or unset ${MIRROR_ENV} to download)")
    return path


def raw_path(key: str) -> Path:
    """Where the raw file ``OWNER/REPO/COMMIT/PATH`` sits in the cache (whether it is there or not)."""
    return cache_dir() / "raw" / key


class MirrorCopy:
    """A pooch downloader that copies ``OWNER/REPO/COMMIT/PATH`` from a local folder."""

    def __init__(self, root: Path):
        self.root = root

    def __call__(self, url: str, output_file, pooch) -> None:
        src = self.root / url.removeprefix(BASE_URL)
        if not src.is_file():
            raise UserError(f"data-dir: {src} is missing from the mirror {self.root}; "
                            "copy it there, or unset the mirror to download")
        shutil.copyfile(src, output_file)


def _pooch(registry: dict[str, str], mirror: Path | None):
    import pooch

    pooch.get_logger().setLevel(logging.WARNING)  # one line per dataset is ours to print
    return pooch.create(path=cache_dir() / "raw", base_url=BASE_URL, registry=registry,
                        retry_if_failed=0 if mirror else 3)


def _fetch_one(p, key: str, downloader) -> Path:
    import requests

    try:
        return Path(p.fetch(key, downloader=downloader))
    except ValueError as e:  # pooch: the file's sha256 is not the registered one; nothing was cached
        raise UserError(f"{key}: the file's sha256 is not the registered one, so it was refused and nothing "
                        f"was cached ({' '.join(str(e).split())})") from None
    except requests.RequestException as e:
        raise UserError(f"could not download {BASE_URL}{key} ({type(e).__name__}); {OFFLINE_FIX}") from None


def fetch_files(files: dict[str, str], what: str, threads: int = 8) -> list[Path]:
    """Each ``OWNER/REPO/COMMIT/PATH -> sha256`` in the cache, fetched where missing; the local paths.
    Prints one line when anything is fetched, saying what from where."""
    mirror = mirror_dir()  # a mirror set wrong is an error even when nothing needs it
    missing = [k for k, h in files.items() if not _cached(k, h)]
    if missing:
        p = _pooch({k: f"sha256:{files[k]}" for k in missing}, mirror)
        downloader = MirrorCopy(mirror) if mirror else None
        origin = f"the mirror {mirror}" if mirror else BASE_URL + _common_prefix(missing)
        print(f"scalelab: fetching {what}: {len(missing)} file(s) from {origin} into {cache_dir() / 'raw'}",
              file=sys.stderr)
        for key in missing:  # pooch makes a missing folder itself, which races between threads
            raw_path(key).parent.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max(1, min(threads, len(missing)))) as pool:
            list(pool.map(lambda k: _fetch_one(p, k, downloader), missing))
    return [raw_path(k) for k in files]


def _cached(key: str, sha256: str) -> bool:
    """In the cache with the registered hash (a file changed on disk is fetched again)."""
    import pooch

    path = raw_path(key)
    return path.is_file() and pooch.file_hash(str(path)) == sha256


def _common_prefix(keys: list[str]) -> str:
    parts = [k.split("/") for k in keys]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return "/".join(common[:3]) + ("/..." if len(common) < max(map(len, parts)) else "")
