"""Command transcripts that stay true: every fenced block in docs/ preceded by `<!-- transcript -->` holds one
`$ scalelab ...` command and its exact output. `python docs/transcripts.py` checks them all (exit 1 on drift);
`--update` rewrites them from what the commands print now. Only cheap commands (no training, no download) are
marked; tests/test_docs.py runs the check, so a changed output fails the suite until the docs are updated."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
BLOCK = re.compile(r"<!-- transcript -->\n```text\n\$ (scalelab[^\n]*)\n(.*?)```", re.S)


def run(command: str) -> str:
    exe = Path(sys.executable).parent / "scalelab"
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    r = subprocess.run([str(exe), *shlex.split(command)[1:]], capture_output=True, text=True, env=env, timeout=120)
    return r.stdout


def blocks(path: Path):
    return list(BLOCK.finditer(path.read_text()))


def check(update: bool = False) -> list[str]:
    drift = []
    for path in sorted(DOCS.rglob("*.md")):
        text = path.read_text()
        new = BLOCK.sub(lambda m: f"<!-- transcript -->\n```text\n$ {m.group(1)}\n{run(m.group(1))}```", text)
        if new != text:
            drift.append(str(path.relative_to(DOCS)))
            if update:
                path.write_text(new)
    return drift


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--update", action="store_true")
    update = p.parse_args().update
    drift = check(update)
    print("\n".join(f"{'updated' if update else 'out of date'}: {d}" for d in drift) or "transcripts ok")
    sys.exit(1 if drift and not update else 0)
