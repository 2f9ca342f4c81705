"""The domain of every numeric option, declared where the option is (``type=positive_int`` ...), and the
parser that reports any bad argument in the project's one line: ``scalelab: error: --seq-len must be an
integer >= 1, got 0`` and exit code 2."""

from __future__ import annotations

import argparse
import math
import re
import sys

from scalelab.errors import UserError


def _number(text: str, kind: type):
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, got {text!r}") \
            from None
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return v


def _domain(kind: type, ok, what: str):
    def parse(text: str):
        v = _number(text, kind)
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return v
    parse.__name__ = what
    return parse


positive_int = _domain(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _domain(int, lambda v: v >= 0, "an integer >= 0")
positive = _domain(float, lambda v: v > 0, "a positive number")
non_negative = _domain(float, lambda v: v >= 0, "a number >= 0")
fraction = _domain(float, lambda v: 0 < v <= 1, "a fraction in (0, 1]")
unit_interval = _domain(float, lambda v: 0 <= v <= 1, "a fraction in [0, 1]")
level = _domain(float, lambda v: 0 < v < 1, "in (0, 1), e.g. 0.9")


def method_names(text: str | None, known, what: str) -> list[str]:
    """``--methods A,B`` checked against ``known`` (all of them when not given); an unknown name is one line:
    "--methods: unknown WHAT 'X'; choose from ..."."""
    names = [m.strip() for m in text.split(",")] if text else list(known)
    for m in names:
        if m not in known:
            raise UserError(f"--methods: unknown {what} {m!r}; choose from {', '.join(known)}")
    return names


class Parser(argparse.ArgumentParser):
    """argparse with the project's errors: one line on stderr, exit code 2, no usage block."""

    def add_argument(self, *args, **kwargs):
        if "--json" in args and "help" not in kwargs:  # one flag, one meaning everywhere
            kwargs["help"] = "print the result as JSON instead of tables"
        return super().add_argument(*args, **kwargs)

    def error(self, message: str):
        m = re.match(r"argument ([^:]+): (.*)", message, re.S)
        if m:  # "--seq-len must be ...", "COMMAND: invalid choice ..."
            flag, rest = m.group(1).split("/")[-1], m.group(2)
            message = f"{flag} {rest}" if rest.startswith("must") else f"{flag}: {rest}"
        print(f"scalelab: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)
