"""`scalelab eval`: a run or every finished run of a ladder on lm-evaluation-harness tasks."""

from __future__ import annotations

from pathlib import Path

from scalelab.cli.args import non_negative_int, positive, positive_int
from scalelab.cli.output import print_json, table
from scalelab.errors import UserError


def cmd_eval(a) -> int:
    from scalelab.evaluate.benchmarks import evaluate_ladder, evaluate_run

    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    if not tasks:
        raise UserError("--tasks names at least one lm-evaluation-harness task, e.g. --tasks lambada_openai")
    kw = dict(include_path=a.include_path, limit=a.limit, num_fewshot=a.num_fewshot, batch_size=a.batch_size)
    src = Path(a.src)
    if (src / "ladder.sqlite").exists():
        rows = evaluate_ladder(src, tasks, progress=(lambda *x: None) if a.json else print, **kw)
    elif (src / "config.json").exists():
        rows = [evaluate_run(src, tasks, **kw)]
    else:
        raise UserError(f"{src} is neither a run directory (config.json) nor a ladder (ladder.sqlite)")
    if a.json:
        print_json(rows if len(rows) > 1 else rows[0])
        return 0
    metrics = sorted({m for r in rows for res in r["results"].values() for m in res if not m.endswith("_stderr")})
    table(f"lm-evaluation-harness on {src}" + (f" (first {a.limit:g} documents per task)" if a.limit else ""),
          ["run", "step", "task", *metrics],
          [(Path(r["run"]).name, str(r["step"]), t, *(f"{m[k]:.4f}" if k in m else "" for k in metrics))
           for r in rows for t, m in r["results"].items()])
    where = "RUN/lm_eval.json and the ladder's store (`ladder export --tasks`)" if len(rows) > 1 or \
        (src / "ladder.sqlite").exists() else f"{src}/lm_eval.json"
    print(f"results in {where}")
    return 0


def register(sub) -> None:
    e = sub.add_parser("eval", help="evaluate a run or a ladder on lm-evaluation-harness tasks",
                       description="Scores a run's newest checkpoint (or every finished run of a ladder) on "
                                   "lm-evaluation-harness tasks, through the run's own tokenizer (pip install "
                                   "'scalelab[eval]'). Tasks that are not local download their datasets.")
    e.add_argument("src", help="a run directory or a ladder directory")
    e.add_argument("--tasks", required=True, help="comma-separated harness tasks, e.g. lambada_openai,hellaswag")
    e.add_argument("--include-path", default=None, help="a folder of your own YAML task definitions")
    e.add_argument("--limit", type=positive, default=None, help="documents per task (a number, or a fraction < 1)")
    e.add_argument("--num-fewshot", type=non_negative_int, default=None,
                   help="in-context examples per question (default: each task's own)")
    e.add_argument("--batch-size", type=positive_int, default=16, help="sequences scored at once (default 16)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_eval)
