"""The one way commands print results: JSON (``--json``) or a rich table."""

from __future__ import annotations

import json


def print_json(obj) -> None:
    from scalelab.io import to_plain

    print(json.dumps(to_plain(obj), indent=2, default=float))


def emit(obj, as_json: bool, render) -> None:
    """``obj`` as JSON, or through ``render(obj)`` (a function that prints tables)."""
    if as_json:
        print_json(obj)
    else:
        render(obj)


def table(title: str, columns: list[str], rows: list[tuple], right: tuple[str, ...] | None = None) -> None:
    """A rich table: ``columns`` named, every column right-aligned except the first (or those not in
    ``right`` when given)."""
    from rich.table import Table

    from scalelab.ui import console

    t = Table(title=title)
    for i, c in enumerate(columns):
        justify = ("right" if c in right else "left") if right is not None else ("left" if i == 0 else "right")
        t.add_column(c, justify=justify)
    for r in rows:
        t.add_row(*[str(x) for x in r])
    console().print(t)


def fit_written(out: str | None, next_command: str) -> None:
    """A fit command's closing lines: ``next_command`` (``{fit}`` stands for the fit file) and where the fit
    was written, or that --out writes it."""
    print(next_command.replace("{fit}", out or "FIT.json") + ("" if out else "  (write the fit with --out)"))
    if out:
        print(f"wrote {out}")


def warn(lines) -> None:
    """Each warning as one line on stderr (results stay on stdout)."""
    import sys

    for line in lines or ():
        print(f"scalelab: warning: {line}", file=sys.stderr)


def save_and_print_json(res: dict, out: str | None, as_json: bool, detail: str = "rows") -> bool:
    """Write ``res`` whole to ``out`` (atomically) if given; with ``as_json`` print it without its long
    ``detail`` list and return True (the caller is done)."""
    if out:
        from scalelab.io import atomic_write_json

        atomic_write_json(out, res)
    if as_json:
        print_json({k: v for k, v in res.items() if k != detail})
    return as_json
