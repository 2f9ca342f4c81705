"""Synthetic people with uniformly drawn attributes: the facts of the knowledge-capacity lab's biographies and
of the ``recall`` task, a pure function of a seed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scalelab.errors import UserError

ATTRIBUTES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "city": (("paris", "lima", "oslo", "cairo", "dakar", "quito", "perth", "seoul", "delhi", "tokyo",
              "rome", "baku", "kyiv", "lagos", "hanoi", "bern"),
             ("{n} comes from {v}.", "{n} was born in {v}.", "the birthplace of {n} is {v}.")),
    "job": (("baker", "nurse", "pilot", "judge", "miner", "poet", "smith", "tailor"),
            ("{n} works as a {v}.", "{n} is a {v} by trade.", "the job of {n} is {v}.")),
    "year": (tuple(str(y) for y in range(1900, 1964)),
             ("{n} arrived in {v}.", "{n} was born in the year {v}.", "the birth year of {n} is {v}.")),
    "color": (("red", "blue", "green", "amber", "violet", "gray", "teal", "pink"),
              ("{n} likes the color {v}.", "the favorite color of {n} is {v}.", "{n} loves {v}.")),
}
SYLLABLES = ("ka", "vo", "mi", "ra", "lu", "ten", "so", "bi", "dar", "ne", "po", "zu", "fi", "gal", "ho",
             "jin", "ke", "lo", "mu", "ny", "pa", "qui", "re", "sy", "tor", "ve", "wa", "xi", "ya", "ze")


@dataclass(frozen=True)
class People:
    """``n`` synthetic people with uniformly random attributes, a pure function of ``seed``."""

    n: int = 200
    seed: int = 1234
    attributes: tuple[str, ...] = ("city", "job", "year", "color")

    def validate(self) -> People:
        unknown = [a for a in self.attributes if a not in ATTRIBUTES]
        if unknown:
            raise UserError(f"unknown attribute {unknown[0]!r}; known: {', '.join(ATTRIBUTES)}")
        if not 1 <= self.n <= 200_000:
            raise UserError(f"the number of people must be in 1..200000, got {self.n}")
        return self

    def table(self) -> list[dict[str, str]]:
        rng = np.random.default_rng([self.seed, 7])
        names: set[str] = set()
        rows = []
        while len(rows) < self.n:
            first = "".join(rng.choice(SYLLABLES, size=2))
            last = "".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4))))
            name = f"{first} {last}"
            if name in names:
                continue
            names.add(name)
            row = {"name": name}
            for a in self.attributes:
                values = ATTRIBUTES[a][0]
                row[a] = values[int(rng.integers(len(values)))]
            rows.append(row)
        return rows

    def bits_per_person(self) -> float:
        return sum(math.log2(len(ATTRIBUTES[a][0])) for a in self.attributes)

    def biography(self, row: dict[str, str], rng: np.random.Generator) -> str:
        """One biography: every attribute in a random phrasing, in a random order."""
        order = rng.permutation(len(self.attributes))
        parts = []
        for i in order:
            a = self.attributes[i]
            phrasings = ATTRIBUTES[a][1]
            parts.append(phrasings[int(rng.integers(len(phrasings)))].format(n=row["name"], v=row[a]))
        return " ".join(parts)


_TABLES: dict[People, list[dict[str, str]]] = {}


def people_table(p: People) -> list[dict[str, str]]:
    """``p``'s table, computed once per process."""
    if p not in _TABLES:
        _TABLES[p] = p.table()
    return _TABLES[p]
