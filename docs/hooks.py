"""MkDocs hooks: the command reference is generated from scalelab's own argparse parsers at build time."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

MARK = "<!-- cli-reference -->"
LAYOUT = "<!-- layout -->"
SRC = Path(__file__).resolve().parents[1] / "src" / "scalelab"


def _commands(parser: argparse.ArgumentParser, prefix: str):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prefix} {name}")


def cli_reference() -> str:
    import os

    from scalelab.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: the page must not depend on it
    parts = []
    for name, parser in _commands(build_parser(), "scalelab"):
        if name == "scalelab":
            continue
        parts.append(f"## `{name}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "\n".join(parts)


def layout() -> str:
    """Every module of the package with the first line of its docstring, as a table per package."""
    rows = []
    for path in sorted(SRC.rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        rows.append(f"| `{path.relative_to(SRC.parent)}` | {doc.strip().splitlines()[0] if doc else ''} |")
    return "| module | what it is |\n|---|---|\n" + "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARK in markdown:
        markdown = markdown.replace(MARK, cli_reference())
    if LAYOUT in markdown:
        markdown = markdown.replace(LAYOUT, layout())
    return markdown
