"""`scalelab ladder plan|run|status|export|suggest` and `scalelab demo`."""

from __future__ import annotations

import time
from pathlib import Path

from scalelab.cli.args import non_negative, non_negative_int, positive, positive_int, unit_interval
from scalelab.cli.output import print_json, table
from scalelab.errors import UserError


def _parse_budgets(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--budgets must be comma-separated numbers like 1e12,3e12,1e13, got {text!r}") from None
    if not vals:
        raise UserError("--budgets is empty")
    if not all(v > 0 and v != float("inf") for v in vals):
        raise UserError(f"--budgets must be positive FLOP counts like 1e12,3e12,1e13, got {text!r}")
    return vals


def plan_table(rungs, title: str) -> None:
    table(title, ["name", "N", "non-emb N", "D", "C=6ND", "D/N", "steps", "batch", "lr", "warmup", "lr/batch rule"],
          [(r.name, f"{r.N:,}", f"{r.N_non_embedding:,}", f"{r.D:,}", f"{r.C:.3g}", f"{r.D / r.N:.1f}", str(r.steps),
            str(r.config.train.batch_size), f"{r.config.optim.lr:.4f}", str(r.config.schedule.warmup_steps),
            r.rule + (f", seed {r.config.train.seed}" if r.replica_of else "")) for r in rungs])


def cmd_plan(a) -> int:
    from dataclasses import replace

    from scalelab.config import DataConfig, TasksConfig
    from scalelab.io import atomic_write_text
    from scalelab.ladder.plan import LadderSpec, plan, spec_to_toml

    spec = LadderSpec(budgets=_parse_budgets(a.budgets), sizes_per_budget=a.sizes_per_budget, strategy=a.strategy,
                      vocab_size=a.vocab_size, seq_len=a.seq_len, tokens_per_param=a.tokens_per_param, span=a.span,
                      min_width=a.min_width, heuristics=a.heuristics, mup_base_lr=a.mup_base_lr, seeds=a.seeds)
    if a.corpus:
        spec = replace(spec, data=DataConfig(corpus=a.corpus, tokenizer_train_bytes=spec.data.tokenizer_train_bytes))
    if a.task:
        spec = replace(spec, tasks=TasksConfig(names=tuple(a.task), train_fraction=a.task_fraction,
                                               eval_problems=a.task_problems))
    elif a.task_fraction:
        raise UserError("--task-fraction needs --task SPEC (the tasks to mix into the data)")
    rungs = plan(spec)
    if a.json:
        print_json([r.record() for r in rungs])
    else:
        plan_table(rungs, f"IsoFLOP ladder: {len(rungs)} runs, C = 6 N D with N = total parameters")
        total = sum(r.C for r in rungs)
        print(f"total compute {total:.3g} FLOPs; strategy {spec.strategy}; {spec.rules().describe()}")
    if a.out:
        atomic_write_text(Path(a.out), spec_to_toml(spec))
        if not a.json:
            print(f"wrote {a.out}")
    return 0


def cmd_run(a) -> int:
    from scalelab.ladder.plan import load_spec

    spec = load_spec(a.ladder)
    if a.threads is not None:
        from dataclasses import replace

        spec = replace(spec, threads=a.threads)

    with run_bar(spec, a.out) as bar:
        return _run(a, spec, bar.console.print if bar else lambda line: print(line, flush=True))


def run_bar(spec, out: str):
    """A FLOP-weighted progress bar with ETA on a terminal (lines only when stdout is a file or pipe)."""
    import sys
    from contextlib import nullcontext

    if not sys.stdout.isatty():
        return nullcontext()
    from scalelab.ladder.executors import store_path
    from scalelab.ladder.plan import plan
    from scalelab.ladder.progress import FlopsProgress

    return FlopsProgress(store_path(Path(out)), plan(spec), description=f"ladder {out}")


def _run(a, spec, say) -> int:
    from scalelab.ladder.executors import run_ladder

    def progress(done, total, name):
        say(f"[{done}/{total}] " + (f"finished {name}" if name else "runs done before this start"))

    if a.executor == "ray":
        from scalelab.ladder.ray_executor import run_ladder_ray

        if a.parallel != 1 or a.share:
            raise UserError("--parallel and --share are for the local executor; Ray schedules by each run's "
                            "resources")
        run_ladder_ray(spec, a.out, address=a.address, shared_dir=a.shared_dir, max_retries=a.max_retries,
                       progress=progress)
    else:
        if a.address or a.shared_dir:
            raise UserError("--address and --shared-dir need --executor ray")
        store = run_ladder(spec, a.out, parallel=a.parallel, progress=progress, share=a.share)
        runs, claims = store.runs(), store.claims()
        store.close()
        left = [r["name"] for r in runs if r["status"] != "done"]
        if left:
            holders = sorted({f"pid {c['pid']} on {c['host']}" for c in claims}) or ["nobody (they failed)"]
            say(f"{len(left)} of {len(runs)} runs are not done; units in the hands of {', '.join(holders)}; "
                f"`scalelab ladder status {a.out}` shows them")
            return 0
    say(f"ladder complete -> {a.out}; `scalelab ladder export {a.out} --out runs.csv`")
    return 0


def cmd_status(a) -> int:
    from scalelab.ladder.results import open_store, rung_quality

    store = open_store(a.dir)
    runs, prog, claims = store.runs(), store.progress(), store.claims()
    checks = rung_quality(store)
    quality = dict(zip(checks["run"], checks["quality"]))
    store.close()
    if a.json:
        print_json([{**{k: v for k, v in r.items() if k != "spec"}, "step": prog.get(r["name"], 0),
                     "quality": quality.get(r["name"], "")} for r in runs])
        return 0
    for c in claims:  # `ladder run --share`: which process trains which unit (named by its first run)
        ago = time.time() - c["heartbeat"]
        print(f"{c['unit']}: claimed by pid {c['pid']} on {c['host']}, last heard {ago:.0f} s ago")
    table(f"{a.dir}: {sum(r['status'] == 'done' for r in runs)}/{len(runs)} done",
          ["run", "status", "progress", "N", "D", "final loss", "attempts", "wall s"],
          [(r["name"], r["status"], f"{prog.get(r['name'], 0)}/{r['steps']}", f"{r['N']:,}", f"{r['D']:,}",
            f"{r['final_loss']:.4f}" if r["final_loss"] else "", str(r["attempts"]),
            f"{r['wall_seconds']:.0f}" if r["wall_seconds"] else "") for r in runs], right=())
    flagged = {n: q for n, q in quality.items() if q}
    for name, why in flagged.items():
        print(f"check {name}: {why}")
    if quality:
        print(f"rung-quality checks: {len(flagged)} of {len(quality)} finished rungs flagged"
              + ("; `scalelab fit runs.csv --exclude-flagged` leaves them out" if flagged else ""))
    return 0


def cmd_export(a) -> int:
    from scalelab.ladder.results import export

    if a.tasks and a.curves:
        raise UserError("give --tasks or --curves, not both", arg="curves")
    df = export(a.dir, a.out, tasks=a.tasks, curves=a.curves)
    if a.curves:
        print(f"wrote {len(df)} rows ({df['run'].nunique()} runs, {int(df['loss'].notna().sum())} evaluated points) "
              f"to {a.out}; fit them with `scalelab fit {a.out} --curves --out curvefit.json`")
        return 0
    what = f"{df['task'].nunique()} tasks, " if a.tasks else ""
    print(f"wrote {len(df)} rows ({what}{int(df['final'].sum())} final points) to {a.out}")
    return 0


def cmd_report(a) -> int:
    from scalelab.ladder.results import ladder_dir
    from scalelab.report.data import gather
    from scalelab.report.html import write_report

    if a.fit:
        import warnings

        from scalelab.ladder.results import fit_ladder

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            written = fit_ladder(a.src)
        for w in caught:
            print(f"warning: {w.message}")
        print("fitted and wrote " + ", ".join(str(p) for p in written))
    data = gather(a.src)
    out = write_report(a.src, a.out, a.png, data=data)
    if data.law3 is None:
        print(f"note: {ladder_dir(a.src)} has no {', '.join(data.missing_fits)}: the report draws no law; "
              f"`scalelab report {a.src} --fit` fits the ladder first")
    size = out.stat().st_size / 1e6
    print(f"wrote {out} ({size:.1f} MB, opens offline)" + (f" and figures in {a.png}" if a.png else ""))
    return 0


def cmd_demo(a) -> int:
    from scalelab.demo import run_demo

    run_demo(a.out, quick=a.quick, parallel=a.parallel, gpu=a.gpu,
             budgets=_parse_budgets(a.budgets) if a.budgets else None)
    return 0


def _suggest_law(src: str):
    """A fit file as it is, or a table fitted with the default method (no bootstrap: design needs none)."""
    from dataclasses import replace

    from scalelab.laws.law import FittedLaw
    from scalelab.laws.methods import DEFAULT_METHOD, get_method
    from scalelab.laws.table import load_table

    if src.endswith(".json"):
        return FittedLaw.load(src)
    return replace(get_method(DEFAULT_METHOD), bootstrap=0).fit(load_table(src).finals())


def cmd_suggest(a) -> int:
    from scalelab.laws.design import suggest_for_target

    if a.compute is not None:
        target = {"C": a.compute}
    elif a.params is not None and a.tokens is not None:
        target = {"N": a.params, "D": a.tokens}
    else:
        raise UserError("give the target: --params N --tokens D, or --compute C")
    res = suggest_for_target(_suggest_law(a.src), target, k=a.k, max_flops=a.max_flops)
    if a.json:
        print_json(res)
        return 0
    t = res["target"]
    print(f"target N = {t['N']:.3g}, D = {t['D']:.3g} (C = {t['C']:.3g}): loss {t['loss']:.4f}, "
          f"{t['level']:.0%} interval [{t['loss_lo']:.4f}, {t['loss_hi']:.4f}] now")
    table(f"next runs, each the most interval narrowed per FLOP (candidates up to {res['max_flops']:.3g} FLOPs)",
          ["#", "N", "D", "C=6ND", "D/N", "interval after"],
          [(str(i + 1), f"{p['N']:.3g}", f"{p['D']:.3g}", f"{p['C']:.3g}", f"{p['D'] / p['N']:.0f}",
            f"[{p['loss_lo_after']:.4f}, {p['loss_hi_after']:.4f}]") for i, p in enumerate(res["suggestions"])])
    return 0


def _register_plan(ls) -> None:
    p = ls.add_parser("plan", help="plan an IsoFLOP grid from compute budgets (no training)")
    p.add_argument("--budgets", required=True, help="FLOP budgets, e.g. 1e12,3e12,1e13")
    p.add_argument("--sizes-per-budget", type=positive_int, default=4,
                   help="model sizes trained at each budget (default 4)")
    p.add_argument("--strategy", choices=["cosine", "wsd"], default="cosine",
                   help="cosine: one run per point; wsd: one constant-rate trunk per shape with a short cooldown per "
                        "budget (default cosine)")
    p.add_argument("--corpus", default=None, help="stdlib (default), a local path, or hf:NAME")
    p.add_argument("--vocab-size", type=positive_int, default=512, help="BPE vocabulary size (default 512)")
    p.add_argument("--seq-len", type=positive_int, default=128, help="training sequence length in tokens (default 128)")
    p.add_argument("--tokens-per-param", type=positive, default=40.0, help="centre of the sizes (D/N at the guess)")
    p.add_argument("--span", type=positive, default=16.0, help="largest/smallest size ratio per budget")
    p.add_argument("--min-width", type=positive_int, default=16, help="smallest d_model in the family (default 16)")
    p.add_argument("--heuristics", default="deepseek", metavar="RULE",
                   help="how each rung's lr and batch are set: deepseek (DeepSeek LLM's fits in C), steplaw "
                        "(StepLaw's in N and D), mup (muP at every width, one lr tuned at the smallest), or "
                        "fitted:FILE (the lr_law.json of `scalelab lab lr-transfer`)")
    p.add_argument("--mup-base-lr", type=non_negative, default=0.0,
                   help="with --heuristics mup: the lr tuned at --min-width "
                        "(default: DeepSeek's at the smallest budget)")
    p.add_argument("--seeds", type=positive_int, default=1, metavar="K",
                   help="train each budget's centre rung K times (seeds seed..seed+K-1): the seed noise the "
                        "rung-quality checks of `ladder status` measure against")
    p.add_argument("--task", action="append", default=None, metavar="SPEC",
                   help="evaluate every rung on this task at each evaluation (repeatable): a spec such as "
                        "addition:digits=2, or a .jsonl file of prompt/answer pairs")
    p.add_argument("--task-fraction", type=unit_interval, default=0.0,
                   help="mix the tasks' problems into the training text at this fraction (held-out ones never)")
    p.add_argument("--task-problems", type=positive_int, default=200, help="held-out problems per task")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None, help="write the ladder file (TOML)")
    p.set_defaults(fn=cmd_plan)


def register(sub) -> None:
    lad = sub.add_parser("ladder", help="plan, run, import, inspect and export ladders of training runs")
    ls = lad.add_subparsers(dest="ladder_cmd", required=True, metavar="ACTION")
    _register_plan(ls)
    r = ls.add_parser("run", help="run or resume a ladder")
    r.add_argument("ladder", help="LADDER.toml from `scalelab ladder plan --out`")
    r.add_argument("--out", required=True, help="the ladder folder (runs, store, fits); run again to resume")
    r.add_argument("--parallel", type=positive_int, default=1, help="runs at a time (processes)")
    r.add_argument("--share", action="store_true",
                   help="let other `ladder run --share` processes (here or on machines sharing OUT's "
                        "filesystem) run the same ladder: each unit is claimed through the store, none trained "
                        "twice")
    r.add_argument("--threads", type=positive_int, default=None, help="torch threads per run")
    r.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local processes, or a Ray cluster (pip install 'scalelab[ray]')")
    r.add_argument("--address", default=None,
                   help="Ray cluster: auto (the cluster this machine belongs to) or ray://HOST:10001; "
                        "default: start a local Ray instance")
    r.add_argument("--shared-dir", default=None,
                   help="Ray: where run directories and checkpoints go, a path every worker sees (default --out)")
    r.add_argument("--max-retries", type=non_negative_int, default=3, help="Ray: retries of a run whose worker dies")
    r.set_defaults(fn=cmd_run)
    s = ls.add_parser("status", help="progress of a ladder")
    s.add_argument("dir", help="a ladder folder")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)
    e = ls.add_parser("export", help="write the (run, tokens, loss) table that `scalelab fit` reads")
    e.add_argument("dir", help="a ladder folder")
    e.add_argument("--out", required=True, help="runs.csv or runs.parquet")
    e.add_argument("--tasks", action="store_true",
                   help="the task table instead: one row per run, evaluation and task, with its metrics "
                        "(for `scalelab fit TABLE --metric exact_match --via answer_bpb`)")
    e.add_argument("--curves", action="store_true",
                   help="the curve table instead: every record of every run with its learning rate (run, N, step, "
                        "tokens, lr, loss), for `scalelab fit CURVES.csv --curves`")
    e.set_defaults(fn=cmd_export)
    from scalelab.cli import importing

    importing.register(ls)

    g = ls.add_parser("suggest", help="which runs to train next to narrow the forecast at a target most per FLOP",
                      description="SRC is a run table (fitted with the default method) or a fit file from "
                                  "`scalelab fit --out`. Candidates are sizes between the smallest fitted one and "
                                  "the target's, at 5-160 tokens per parameter, up to --max-flops.")
    g.add_argument("src", help="TABLE.csv|.parquet, or FIT.json")
    g.add_argument("--params", type=positive, default=None, help="target N")
    g.add_argument("--tokens", type=positive, default=None, help="target D")
    g.add_argument("--compute", type=positive, default=None, help="target C: at the law's compute-optimal N*, D*")
    g.add_argument("-k", type=positive_int, default=3, help="runs to suggest (default 3)")
    g.add_argument("--max-flops", type=positive, default=None,
                   help="largest run to consider (default: 10x the largest fitted run, below the target)")
    g.add_argument("--json", action="store_true")
    g.set_defaults(fn=cmd_suggest)

    rp = sub.add_parser("report", help="interactive HTML report (and PNG/SVG figures) of a ladder")
    rp.add_argument("src", help="ladder directory or its ladder.sqlite")
    rp.add_argument("--out", default=None, help="HTML file (default: SRC/report.html)")
    rp.add_argument("--png", default=None, help="also write PNG and SVG figures to this directory")
    rp.add_argument("--fit", action="store_true",
                    help="fit the ladder first and write its fit files (the report itself never fits)")
    rp.set_defaults(fn=cmd_report)

    d = sub.add_parser("demo", help="the end-to-end demo: ladder -> laws -> a predicted, then trained, bigger run")
    d.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    d.add_argument("--parallel", type=positive_int, default=2, help="runs trained at a time (default 2)")
    d.add_argument("--quick", action="store_true", help="a smaller ladder (for a first look; ~1 min)")
    d.add_argument("--gpu", action="store_true",
                   help="the GPU demo: ~1-15M-parameter rungs in bf16 on one CUDA device, trained on the machine's "
                        "installed Python files; without CUDA, its toy-scale twin (the quick ladder) on the CPU")
    d.add_argument("--budgets", default=None, metavar="C1,C2,...",
                   help="replace the ladder's FLOP budgets (e.g. 1e15,3e15,1e16; the held-out run is at 4x the "
                        "largest)")
    d.set_defaults(fn=cmd_demo)
