"""What task evaluation adds to a run: the time of one `TaskEvaluator` call (held-out problems of each
task: teacher-forced scoring + greedy decoding through the KV cache) against its peer in the same
process, the validation-loss evaluation the loop runs at every evaluation anyway.

    .venv/bin/python bench/task_eval.py RUN_DIR [RUN_DIR ...] [--tasks addition:digits=1 ...] [--out FILE.json]

RUN_DIRs are trained runs (e.g. a ladder's OUT/runs/*); their own tokenizer and validation windows are used.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from scalelab.config import TasksConfig
from scalelab.evaluate.during import TaskEvaluator
from scalelab.io import atomic_write_json
from scalelab.train.data import load_dataset
from scalelab.train.loop import evaluate
from scalelab.train.runner import load_run


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(run_dir: str, tasks: TasksConfig, repeats: int) -> dict:
    model, cfg, tok = load_run(run_dir)
    ds = load_dataset(cfg, log=lambda *a: None)
    windows = ds.eval_windows(cfg.train.seq_len, cfg.train.eval_tokens)
    ev = TaskEvaluator(tasks, tok)
    t_val = best_of(lambda: evaluate(model, windows, cfg.train.batch_size, "cpu", None), repeats)
    t_tasks = best_of(lambda: ev(model), repeats)
    steps = cfg.total_steps
    evals = steps // cfg.train.eval_every + 1
    return {"run": run_dir, "params": cfg.model.num_params_total, "val_tokens": int(windows[:, 1:].numel()),
            "problems": sum(len(p) for _, p in ev.sets), "val_eval_s": t_val, "task_eval_s": t_tasks,
            "ratio_task_to_val": t_tasks / t_val, "evaluations_per_run": evals}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--tasks", nargs="+", default=["addition:digits=1", "addition:digits=2"])
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tasks = TasksConfig(names=tuple(a.tasks), eval_problems=a.problems).validate()
    rows = [measure(r, tasks, a.repeats) for r in a.runs]
    for r in rows:
        print(f"{r['run']}: {r['params']:,} params; validation ({r['val_tokens']:,} tokens) {r['val_eval_s']:.3f} s, "
              f"tasks ({r['problems']} problems) {r['task_eval_s']:.3f} s: {r['ratio_task_to_val']:.2f}x")
    out = {"bench": "task_eval", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
           "threads": a.threads, "torch": torch.__version__, "tasks": list(a.tasks), "rows": rows}
    if a.out:
        atomic_write_json(a.out, out)
        print(f"wrote {a.out}")
    else:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
