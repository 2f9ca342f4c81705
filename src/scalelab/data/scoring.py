"""Scorers of task completions: the final answer of a completion in a task's format, edit distance, digit
matches (the partial-credit metrics of emergence studies)."""

from __future__ import annotations

import numpy as np


def final_answer(task_format: str, completion: str) -> str:
    """The answer a completion commits to: a scratchpad's text after its last ';', else all of it."""
    completion = completion.split("\n", 1)[0]
    if task_format == "scratchpad":
        return completion.rsplit(";", 1)[-1]
    return completion


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two token (character) sequences."""
    prev = np.arange(len(b) + 1)
    for i, ca in enumerate(a, 1):
        cur = np.empty_like(prev)
        cur[0] = i
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        prev = cur
    return int(prev[-1])


def digit_matches(pred: str, target: str) -> list[bool]:
    """Position-wise correctness of ``pred`` against ``target`` (a missing position is wrong)."""
    return [i < len(pred) and pred[i] == c for i, c in enumerate(target)]
