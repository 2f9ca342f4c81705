"""Where a training step's time goes: scalelab's step and transformers' on the same config, in one process,
under torch.profiler (#42: find where the margin is lost at sequence 512 and in the MoE layer).

    python bench/profile_step.py --config d256-v4k-s512 --json bench/results/profile-d256-s512.json

Prints each side's top operators by self CPU time and writes them as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from scalelab.model.transformer import Transformer  # noqa: E402
from throughput import CONFIGS, hf_model, make_step, model_config  # noqa: E402


def top_ops(step, warmup: int, steps: int, k: int) -> list[dict]:
    for _ in range(warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    return [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
             "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps} for e in rows[:k]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="d256-v4k-s512", choices=[c[0] for c in CONFIGS])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    name, d, L, H, V, T, B, moe = next(c for c in CONFIGS if c[0] == a.config)
    cfg = model_config(d, L, H, V, T, moe)
    torch.manual_seed(0)
    x = torch.randint(0, V, (B, T))
    y = torch.roll(x, -1, 1)
    out = {"config": name}
    for kind, model in (("scalelab", Transformer(cfg)), ("hf", hf_model(cfg))):
        model.train()
        out[kind] = top_ops(make_step(model, kind, x, y, "cpu"), 2, a.steps, a.top)
        total = sum(r["self_ms_per_step"] for r in out[kind])
        print(f"\n{kind}: top {a.top} operators by self CPU time ({total:.0f} ms per step in these)")
        for r in out[kind]:
            print(f"  {r['op'][:48]:48s} {r['self_ms_per_step']:9.1f} ms {r['share']:6.1%}  x{r['calls_per_step']:.0f}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
