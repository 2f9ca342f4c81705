"""Terminal output helpers: a console wide enough for our tables even when piped."""

from __future__ import annotations

import sys


def console():
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=150)
