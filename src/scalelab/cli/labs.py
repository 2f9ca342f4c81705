"""`scalelab lab ...` (the labs) and `scalelab tasks ...` (the synthetic task generators)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from scalelab.cli.args import non_negative_int
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
