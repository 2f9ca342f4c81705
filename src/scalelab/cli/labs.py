"""`scalelab lab ...` (the labs) and `scalelab tasks ...` (the synthetic task generators)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from scalelab.cli.args import fraction, non_negative_int, positive_int
from scalelab.cli.output import print_json
from scalelab.errors import UserError
from scalelab.typed import parse_text, section_type

# lab name -> (module, spec class name, one-line help)
LABS = {
    "emergence": ("scalelab.labs.emergence", "EmergenceSpec",
                  "a size ladder on a task mix: exact match vs per-token likelihood, midpoints and widths"),
    "test-time": ("scalelab.labs.testtime", "TestTimeSpec",
                  "scratchpad vs direct answers, majority@k, pass@k, best-of-n against a bigger model"),
    "moe": ("scalelab.labs.moe", "MoESpec",
            "dense vs 8x2 and 16x4 MoEs at equal active parameters: loss, Clark fit, multiplier, balance"),
    "quantize": ("scalelab.labs.quantize", "QuantizeSpec",
                 "RTN weight quantization at 16..2 bits vs validation loss across sizes; torchao cross-check"),
    "capacity": ("scalelab.labs.capacity", "CapacitySpec",
                 "synthetic biographies: bits of knowledge stored per parameter across sizes"),
    "forecast": ("scalelab.labs.forecast", "ForecastSpec",
                 "forecast a bigger model's exact match from a ladder before training it, then train it"),
    "attention": ("scalelab.labs.attention", "AttentionSpec",
                  "MHA, GQA, MQA and MLA at equal parameters: loss, KV cache per token, decode speed"),
    "repetition": ("scalelab.labs.repetition", "RepetitionSpec",
                   "the data wall: repeated vs fresh data at equal tokens, R*_D fitted (Muennighoff et al.)"),
    "quality": ("scalelab.labs.quality", "QualitySpec",
                "dedup (MinHash) + perplexity filtering vs raw data: the law's shift and compute multiplier"),
    "synthetic": ("scalelab.labs.synthetic", "SyntheticSpec",
                  "model collapse: generations trained on their predecessor's samples, with and without real data"),
    "icl": ("scalelab.labs.icl", "ICLSpec",
            "in-context learning appears: induction heads, their phase change, 1 vs 2+ layers, few-shot retrieval"),
    "dpo": ("scalelab.labs.dpo", "DPOSpec",
            "post-training: SFT, then DPO on the model's own right/wrong answers; accuracy and KL per beta"),
    "speculative": ("scalelab.labs.speculative", "SpeculativeSpec",
                    "small models drafting for bigger ones: acceptance, tokens per pass, speed-up, KV cache"),
    "lr-transfer": ("scalelab.labs.lrtransfer", "LRTransferSpec",
                    "the best learning rate across widths under SP and muP; lr*(N, D) vs DeepSeek and StepLaw"),
    "schedules": ("scalelab.labs.schedules", "SchedulesSpec",
                  "cosine, constant, WSD and the law's best schedule: forecast before training, then trained"),
    "mixture": ("scalelab.labs.mixture", "MixtureSpec",
                "proxy runs at random code/prose/tests mixtures, a mixture law's choice checked at 4x"),
    "distill": ("scalelab.labs.distill", "DistillSpec",
                "students distilled from a teacher vs from scratch at equal student compute (Busbridge et al.)"),
}


def build_spec(lab: str, quick: bool, sets: list[str], **fixed):
    import importlib

    mod_name, cls_name, _ = LABS[lab]
    mod = importlib.import_module(mod_name)
    cls = getattr(mod, cls_name)
    kwargs = dict(getattr(mod, "QUICK", {})) if quick else {}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for item in sets:
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in names:
            raise UserError(f"--set {item!r}: the {lab} lab's settings are {', '.join(names)} (as key=value)")
        if section_type(hints[key]) is not None:
            raise UserError(f"--set {key}=... is a nested table, not a value; set it from the Python API")
        kwargs[key] = parse_text(hints[key], value, key)  # the same strict rules as `train` overrides
    return mod, cls(**{**kwargs, **fixed})


def cmd_lab(a) -> int:
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    fixed = {}
    if a.runs:
        if a.lab != "quantize":
            raise UserError(f"only the quantize lab takes run directories; {a.lab} trains its own models")
        fixed["runs"] = tuple(a.runs)
    mod, spec = build_spec(a.lab, a.quick, a.set or [], **fixed)
    out = Path(a.out or f"labs/{a.lab}")
    print(f"{a.lab} lab -> {out}")
    summary = mod.run(spec, out)
    print(mod.headline(summary) if hasattr(mod, "headline") else "")
    print(f"wrote {out / 'summary.json'}, {out / 'report.html'} and figures in {summary['seconds']:.0f} s")
    return 0


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
    p = sub.add_parser("lab", help="run a lab: " + ", ".join(LABS),
                       description="Each lab trains its own models, writes OUT/summary.json, figures and "
                                   "OUT/report.html, and resumes where it stopped when run again.")
    p.add_argument("lab", choices=sorted(LABS), help="; ".join(f"{k}: {v[2]}" for k, v in LABS.items()))
    p.add_argument("runs", nargs="*", help="quantize: run directories to quantize (default: train a small ladder)")
    p.add_argument("--out", default=None, help="output directory (default labs/LAB)")
    p.add_argument("--quick", action="store_true", help="a small, fast version (about a minute) to try it out")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change a setting, e.g. --set sizes=16x1,32x2,64x2 --set tokens=2e6 (repeatable)")
    p.add_argument("--threads", type=non_negative_int, default=0, help="torch threads (default: torch's choice)")
    p.set_defaults(fn=cmd_lab, setting_flag="--set")

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
