"""Synthetic tasks with a prompt/answer split, a scorer and difficulty knobs, for the labs.

Every generator is a pure function of its parameters and a seed: ``task.problems(n, seed)`` returns
the same problems on every machine. Problems are plain text, one per line (``prompt + answer + "\\n"``),
so they can be trained on as a character-level token stream or mixed into a text corpus.

    addition        a + b with ``digits`` digits; formats:
                      plain       "123+489="  -> "612"
                      reversed    "321+984="  -> "216"   (every number least-significant digit first,
                                  the order the carry flows in; Lee et al. 2023)
                      scratchpad  "123+489="  -> "3+9+0=12,2+8+1=11,1+4+1=06;612"  (each column: the
                                  digits, the carry in, the carry out and the sum digit; Nye et al. 2021)
                    knob ``carries``: exact number of carries (-1 = any), for heterogeneous problem sets
    multiplication  a * b with ``digits`` x ``digits_b`` digits, plain format
    recall          facts about synthetic people: "kavo mira, city:" -> "lima" (the same people and
                    attributes as the knowledge-capacity lab's biographies)
    a .jsonl file   a user's own prompt/answer pairs, one {"prompt": ..., "answer": ...} per line
                    (the answer on one line: generation stops at a newline)

Held-out test sets never overlap training problems: ``split_problems`` draws the test set first and
``TaskMix.stream`` rejects any training problem whose prompt is in it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scalelab.data.people import People, people_table
from scalelab.data.scoring import final_answer
from scalelab.errors import UserError


@dataclass(frozen=True)
class Problem:
    prompt: str
    answer: str
    difficulty: int = 0  # e.g. the number of carries, or the digits of the longer factor

    @property
    def text(self) -> str:
        return self.prompt + self.answer + "\n"


# ---- tasks ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Addition:
    digits: int = 3
    format: str = "plain"  # plain | reversed | scratchpad
    carries: int = -1  # exact number of carries; -1 = any
    name: str = "addition"

    def validate(self) -> Addition:
        if self.format not in ("plain", "reversed", "scratchpad"):
            raise UserError(f"addition format must be plain, reversed or scratchpad, got {self.format!r}")
        if not 1 <= self.digits <= 12:
            raise UserError(f"addition digits must be in 1..12, got {self.digits}")
        if self.carries > self.digits:
            raise UserError(f"addition carries={self.carries} exceeds digits={self.digits}")
        return self

    def make(self, a: int, b: int) -> Problem:
        s = a + b
        n_carry, cols, c = 0, [], 0
        da, db = str(a).zfill(self.digits)[::-1], str(b).zfill(self.digits)[::-1]
        for x, y in zip(da, db):
            t = int(x) + int(y) + c
            cols.append(f"{x}+{y}+{c}={t // 10}{t % 10}")
            c = t // 10
            n_carry += c
        if self.format == "reversed":
            return Problem(f"{str(a)[::-1]}+{str(b)[::-1]}=", str(s)[::-1], n_carry)
        prompt = f"{a}+{b}="
        if self.format == "scratchpad":
            return Problem(prompt, ",".join(cols) + ";" + str(s), n_carry)
        return Problem(prompt, str(s), n_carry)

    def sample(self, rng: np.random.Generator) -> Problem:
        lo = 10 ** (self.digits - 1) if self.digits > 1 else 0
        while True:
            a, b = (int(v) for v in rng.integers(lo, 10 ** self.digits, size=2))
            p = self.make(a, b)
            if self.carries < 0 or p.difficulty == self.carries:
                return p

    def answer_of(self, completion: str) -> str:
        return final_answer(self.format, completion)

    @property
    def num_distinct(self) -> int:
        return (10 ** self.digits - (10 ** (self.digits - 1) if self.digits > 1 else 0)) ** 2

    @property
    def spec(self) -> str:
        return f"addition:digits={self.digits},format={self.format}" + \
            (f",carries={self.carries}" if self.carries >= 0 else "")


@dataclass(frozen=True)
class Multiplication:
    digits: int = 2
    digits_b: int = 1
    name: str = "multiplication"

    def validate(self) -> Multiplication:
        if not (1 <= self.digits <= 6 and 1 <= self.digits_b <= 6):
            raise UserError("multiplication digits and digits_b must be in 1..6")
        return self

    def sample(self, rng: np.random.Generator) -> Problem:
        a = int(rng.integers(10 ** (self.digits - 1), 10 ** self.digits))
        b = int(rng.integers(10 ** (self.digits_b - 1) if self.digits_b > 1 else 2, 10 ** self.digits_b))
        return Problem(f"{a}*{b}=", str(a * b), self.digits + self.digits_b)

    def answer_of(self, completion: str) -> str:
        return final_answer("plain", completion)

    @property
    def num_distinct(self) -> int:
        return 9 * 10 ** (self.digits - 1) * (9 * 10 ** (self.digits_b - 1) if self.digits_b > 1 else 8)

    @property
    def spec(self) -> str:
        return f"multiplication:digits={self.digits},digits_b={self.digits_b}"


# Attributes of the synthetic people: name -> (values, phrasings). Values are uniform, so each
# attribute carries exactly log2(len(values)) bits per person (the knowledge-capacity lab's ground truth).
# The first phrasing of each attribute is the capacity lab's probe: its text before the value is
# shared with no other phrasing ("was born in" would be: "was born in the year").
@dataclass(frozen=True)
class Recall:
    people: int = 200
    seed: int = 1234
    name: str = "recall"

    def validate(self) -> Recall:
        self.population.validate()
        return self

    @property
    def population(self) -> People:
        return People(self.people, self.seed)

    def sample(self, rng: np.random.Generator) -> Problem:
        rows = people_table(self.population)
        row = rows[int(rng.integers(len(rows)))]
        attr = self.population.attributes[int(rng.integers(len(self.population.attributes)))]
        return Problem(f"{row['name']}, {attr}:", row[attr], 0)

    def answer_of(self, completion: str) -> str:
        return final_answer("plain", completion)

    @property
    def num_distinct(self) -> int:
        return self.people * len(self.population.attributes)

    @property
    def spec(self) -> str:
        return f"recall:people={self.people},seed={self.seed}"


@dataclass(frozen=True)
class Pairs:
    """A user's prompt/answer pairs from a .jsonl file (``prompt`` and ``answer`` fields, both text)."""

    path: str
    name: str = "pairs"

    def validate(self) -> Pairs:
        _ = self.problems
        return self

    @property
    def problems(self) -> tuple[Problem, ...]:
        return _read_pairs(self.path)

    def sample(self, rng: np.random.Generator) -> Problem:
        return self.problems[int(rng.integers(len(self.problems)))]

    def answer_of(self, completion: str) -> str:
        return final_answer("plain", completion)

    @property
    def num_distinct(self) -> int:
        return len({p.prompt for p in self.problems})

    @property
    def spec(self) -> str:
        return self.path


_PAIRS: dict[tuple, tuple[Problem, ...]] = {}


def _read_pairs(path: str) -> tuple[Problem, ...]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"task file {path} does not exist; give a .jsonl of {{\"prompt\": ..., \"answer\": ...}} lines")
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _PAIRS:
        _PAIRS[key] = tuple(_parse_pair(p, i, line) for i, line in
                            enumerate(p.read_text(encoding="utf-8").splitlines()) if line.strip())
        if not _PAIRS[key]:
            raise UserError(f"task file {path} holds no pairs")
    return _PAIRS[key]


def _parse_pair(path: Path, i: int, line: str) -> Problem:
    try:
        rec = json.loads(line)
        prompt, answer = rec["prompt"], rec["answer"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{path}:{i + 1} must be a JSON object with \"prompt\" and \"answer\" fields") from None
    if not isinstance(prompt, str) or not isinstance(answer, str) or not answer or "\n" in answer:
        raise UserError(f"{path}:{i + 1}: prompt and answer must be text, the answer non-empty and on one line")
    return Problem(prompt, answer, 0)


TASKS = {"addition": Addition, "multiplication": Multiplication, "recall": Recall}
Task = Addition | Multiplication | Recall | Pairs


def parse_task(text: str) -> Task:
    """'addition:digits=3,format=reversed' -> Addition(digits=3, format='reversed'); a path ending in
    .jsonl -> the pairs it holds."""
    if text.endswith(".jsonl"):
        return Pairs(text).validate()
    name, _, params = text.partition(":")
    if name not in TASKS:
        raise UserError(f"unknown task {name!r} in {text!r}; known tasks: {', '.join(TASKS)}, or a .jsonl "
                        "file of prompt/answer pairs")
    cls = TASKS[name]
    fields = {f for f in cls.__dataclass_fields__ if f != "name"}
    kwargs = {}
    for item in filter(None, params.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in fields:
            raise UserError(f"task {name!r} takes key=value parameters among {sorted(fields)}, got {item!r}")
        kwargs[key] = value if key == "format" else _int(value, f"{name}.{key}")
    return cls(**kwargs).validate()


def _int(value: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UserError(f"task parameter {where} must be an integer, got {value!r}") from None


# ---- problem sets and training streams ------------------------------------------------------------

def problem_set(task: Task, n: int, seed: int, exclude: set[str] = frozenset()) -> list[Problem]:
    """``n`` distinct problems (by prompt), none of whose prompts is in ``exclude``; deterministic."""
    rng = np.random.default_rng([seed, 11])
    seen, out = set(exclude), []
    tries = 0
    while len(out) < n:
        p = task.sample(rng)
        tries += 1
        if p.prompt not in seen:
            seen.add(p.prompt)
            out.append(p)
        elif tries > 50 * n + 1000:
            raise UserError(f"task {task.spec} has fewer than {n} distinct problems outside the test set; "
                            "ask for fewer problems or a harder task")
    return out


@dataclass(frozen=True)
class TaskMix:
    """A weighted mixture of tasks, trained on as a character-level stream of problems."""

    tasks: tuple[str, ...] = ("addition:digits=3,format=reversed",)
    weights: tuple[float, ...] = ()
    test_size: int = 200  # held-out problems per task (recall: questions are the facts themselves)
    seed: int = 0

    def parsed(self) -> list[Task]:
        return [parse_task(t) for t in self.tasks]

    def probs(self) -> np.ndarray:
        w = np.asarray(self.weights or [1.0] * len(self.tasks), dtype=float)
        if len(w) != len(self.tasks) or (w < 0).any() or w.sum() <= 0:
            raise UserError("task weights must be one non-negative number per task, not all zero")
        return w / w.sum()

    def test_sets(self) -> dict[str, list[Problem]]:
        """Held-out problems per task: ``test_size``, at most a fifth of a small task's problems.
        Recall is memorisation: its test questions are training facts."""
        out = {}
        for i, task in enumerate(self.parsed()):
            n = min(self.test_size, task.num_distinct // (1 if isinstance(task, Recall) else 5))
            out[task.spec] = problem_set(task, n, self.seed * 1000 + 500 + i)
        return out

    def held_prompts(self) -> dict[str, set[str]]:
        return {s: {q.prompt for q in ps} for s, ps in self.test_sets().items()}

    def stream(self, n_chars: int, seed: int, held: dict[str, set[str]] | None = None) -> str:
        """About ``n_chars`` characters of training problems, one per line, never a test prompt."""
        tasks, p = self.parsed(), self.probs()
        held = self.held_prompts() if held is None else held
        rng = np.random.default_rng([seed, 13])
        lines, total = [], 0
        while total < n_chars:
            task = tasks[int(rng.choice(len(tasks), p=p))]
            prob = task.sample(rng)
            if not isinstance(task, Recall) and prob.prompt in held[task.spec]:
                continue
            lines.append(prob.text)
            total += len(prob.text)
        return "".join(lines)


# ---- tasks in a run: held-out problems evaluated during training, the rest mixed into its text ----------

def heldout(task: Task, n: int, trained: bool) -> list[Problem]:
    """The problems a run is evaluated on: ``n`` distinct ones drawn with a seed fixed by the task's spec,
    so every rung of a ladder, and the corpus that must not contain them, agree. When the task is also
    trained on, at most a fifth of its distinct problems are held out (the rest are trainable); recall
    questions are the facts themselves (memorisation), so they are not withheld."""
    cap = task.num_distinct // 5 if trained and not isinstance(task, Recall) else task.num_distinct
    seed = int.from_bytes(hashlib.blake2b(task.spec.encode(), digest_size=4).digest(), "big")
    return problem_set(task, max(1, min(n, cap)), seed)


def mix_documents(base, names: tuple[str, ...], fraction: float, eval_problems: int, chars_per_doc: int = 400):
    """``base`` documents ((doc_id, text) pairs) with task documents interleaved so that tasks are about
    ``fraction`` of all characters; each task document is ``chars_per_doc`` characters of problems, one per
    line, drawn uniformly over the tasks and never a held-out one (`heldout`)."""
    if not 0 <= fraction < 1:
        raise UserError(f"tasks.train_fraction must be in [0, 1), got {fraction}", arg="tasks.train_fraction")
    tasks = [parse_task(n) for n in names]
    held = [set() if isinstance(t, Recall) else {p.prompt for p in heldout(t, eval_problems, True)} for t in tasks]
    for t, h in zip(tasks, held):
        if t.num_distinct <= len(h):
            raise UserError(f"task {t.spec} has {t.num_distinct} distinct problem(s), all held out for evaluation; "
                            "give it more problems or set tasks.train_fraction=0", arg="tasks.names")
    rng = np.random.default_rng([len(names), 19])
    base_chars = task_chars = i = 0
    for doc_id, text in base:
        yield doc_id, text
        base_chars += len(text)
        while task_chars < fraction / (1 - fraction) * base_chars:
            lines, n = [], 0
            while n < chars_per_doc:
                k = int(rng.integers(len(tasks)))
                prob = tasks[k].sample(rng)
                if prob.prompt not in held[k]:
                    lines.append(prob.text)
                    n += len(prob.text)
            yield f"task:{i}", "".join(lines)
            task_chars, i = task_chars + n, i + 1


def write_task_corpus(mix: TaskMix, n_docs: int, path: Path, base_docs=None, fraction: float = 1.0,
                      chars_per_doc: int = 400) -> dict:
    """Write a .jsonl corpus for `scalelab train data.corpus=PATH`: task documents (about
    ``chars_per_doc`` characters of problems each) mixed with ``base_docs`` (an iterable of texts) so that
    tasks are ``fraction`` of the documents. Test problems of ``mix`` never appear."""
    if not 0 < fraction <= 1:
        raise UserError(f"fraction must be in (0, 1], got {fraction}", arg="fraction")
    rng = np.random.default_rng([mix.seed, 17])
    base = iter(base_docs or ())
    held = mix.held_prompts()
    n_task = n_base = 0
    tmp = Path(path).with_suffix(".tmp")
    with open(tmp, "w") as f:
        for i in range(n_docs):
            if base_docs is None or rng.random() < fraction:
                text = mix.stream(chars_per_doc, seed=mix.seed * 1_000_003 + i, held=held)
                n_task += 1
            else:
                text = next(base, None)
                if text is None:
                    break
                n_base += 1
            f.write(json.dumps({"text": text}) + "\n")
    os.replace(tmp, path)
    return {"task_docs": n_task, "base_docs": n_base, "path": str(path)}
