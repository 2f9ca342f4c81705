"""`scalelab tasks show|write`: the synthetic task generators (data/tasks.py) from the command line."""

from __future__ import annotations

from pathlib import Path

from scalelab.cli.args import fraction, non_negative_int, positive_int
from scalelab.cli.output import print_json


def cmd_tasks_show(a) -> int:
    from scalelab.data.tasks import parse_task, problem_set

    task = parse_task(a.task)
    for p in problem_set(task, a.n, a.seed):
        print(f"{p.prompt}{p.answer}" + (f"    (difficulty {p.difficulty})" if a.difficulty else ""))
    return 0


def cmd_tasks_write(a) -> int:
    from scalelab.data.corpora import iter_corpus
    from scalelab.data.tasks import TaskMix, write_task_corpus

    mix = TaskMix(tasks=tuple(a.task), seed=a.seed, test_size=a.test_size)
    mix.parsed()
    base = None
    if a.mix_with:
        base = (text for _, text in iter_corpus(a.mix_with))
    info = write_task_corpus(mix, a.docs, Path(a.out), base_docs=base, fraction=a.fraction)
    print_json(info)
    return 0


def register(sub) -> None:
    t = sub.add_parser("tasks", help="show synthetic task problems or write a task corpus")
    ts = t.add_subparsers(dest="tasks_cmd", required=True)
    s = ts.add_parser("show", help="print problems of a task, e.g. addition:digits=3,format=scratchpad")
    s.add_argument("task", help="a task spec, e.g. addition:digits=3,format=scratchpad")
    s.add_argument("-n", type=positive_int, default=5, help="problems to show (default 5)")
    s.add_argument("--seed", type=non_negative_int, default=0, help="problem sampling seed (default 0)")
    s.add_argument("--difficulty", action="store_true", help="print each problem's difficulty (carries)")
    s.set_defaults(fn=cmd_tasks_show)
    w = ts.add_parser("write", help="write a .jsonl corpus of task documents, optionally mixed into another corpus",
                      description="The file trains with `scalelab train data.corpus=FILE`. The tasks' held-out test "
                                  "problems (seed, test size) never appear in it.")
    w.add_argument("--task", action="append", required=True, help="a task spec (repeatable)")
    w.add_argument("--out", required=True, help="the .jsonl corpus to write")
    w.add_argument("--docs", type=positive_int, default=10_000, help="documents to write")
    w.add_argument("--mix-with", default=None, help="a corpus (stdlib, a path) whose documents fill the rest")
    w.add_argument("--fraction", type=fraction, default=1.0, help="fraction of documents that are task documents")
    w.add_argument("--seed", type=non_negative_int, default=0, help="problem sampling seed (default 0)")
    w.add_argument("--test-size", type=positive_int, default=200,
                   help="held-out problems per task, never written into the corpus (default 200)")
    w.set_defaults(fn=cmd_tasks_write)
