"""Inference-time compute lab: scratchpads, majority voting and best-of-n against a bigger model.

1. Direct answers ("123+489=612") and a scratchpad ("123+489=3+9+0=12,2+8+1=11,1+4+1=06;612") are
   trained at equal training compute (same model, same number of tokens: the scratchpad model sees
   fewer problems, since each is longer), at each model size.
2. Every model answers the hardest problems greedily and with ``samples`` samples at a temperature;
   accuracy is put against inference FLOPs for greedy, majority@k (self-consistency, Wang et al.
   2022), pass@k = best-of-k with an exact verifier (Brown et al. 2024), and best-of-k scored by the
   model's own mean log-likelihood.
3. Coverage (pass@k) against k: Brown et al. fit -log(coverage) = a * k^-b. Schaeffer et al. (2025)
   show the power law comes from the per-problem single-sample success rates p_i: if p ~ Beta(alpha, .)
   near 0, -log coverage ~ k^-alpha. So the distribution of p_i is checked first (the fraction never
   solved, a Beta fit), and the fitted exponent b is put next to alpha.
4. The compute-matched comparison: each smaller model with the most samples that fit in the FLOPs of
   one greedy answer of the largest model.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from scalelab.data.tasks import Addition, TaskMix
from scalelab.errors import UserError
from scalelab.evaluate.harness import evaluate_task
from scalelab.labs.common import (
    Shape,
    begin,
    model_dict,
    pyplot,
    run_config,
    savefig,
    task_dataset,
    train_or_load,
    write_report,
    write_summary,
)
from scalelab.labs.progress import LabProgress
from scalelab.report.page import table_html
from scalelab.train.rundir import RunDir

FORMATS = ("plain", "scratchpad")


@dataclass(frozen=True)
class TestTimeSpec:
    digits: int = 3  # the hardest digit count; training mixes 1..digits digits
    sizes: tuple[str, ...] = ("32x2", "48x2", "64x2")
    tokens: int = 3_000_000  # training tokens per run: equal training compute for both formats
    samples: int = 32
    temperature: float = 0.8
    test_size: int = 200
    lr: float = 3e-3
    batch_size: int = 8
    seq_len: int = 128
    seed: int = 0
    train_chars: int = 6_000_000

    __test__ = False  # not a pytest class

    def validate(self) -> TestTimeSpec:
        if not 2 <= self.digits <= 6:
            raise UserError(f"digits must be in 2..6, got {self.digits}", arg="digits")
        if len(self.sizes) < 1:
            raise UserError("sizes needs at least one model size", arg="sizes")
        for s in self.sizes:
            Shape.parse(s)
        if self.samples < 2 or self.samples & (self.samples - 1):
            raise UserError(f"samples must be a power of two >= 2, got {self.samples}", arg="samples")
        if self.temperature <= 0:
            raise UserError("temperature must be > 0 for sampling", arg="temperature")
        if self.tokens < self.batch_size * self.seq_len * 10:
            raise UserError(f"tokens={self.tokens} is under 10 steps; raise it", arg="tokens")
        return self

    def mix(self, fmt: str) -> TaskMix:
        tasks = tuple(Addition(d, fmt).spec for d in range(1, self.digits + 1))
        w = tuple(float(d) for d in range(1, self.digits + 1))  # more of the longer problems
        return TaskMix(tasks=tasks, weights=w, test_size=self.test_size, seed=self.seed)


QUICK = dict(digits=2, sizes=("16x1", "32x1"), tokens=150_000, samples=8, test_size=40, train_chars=400_000)


def _result(spec, fmt, size, cfg, run, ds, mix, hardest, test, log) -> dict:
    """Train (or reuse) one model and sample it on the hardest problems."""
    model, summary = train_or_load(cfg, run, ds, log)
    max_new = len(test[0].answer) + 4 if fmt == "plain" else max(len(p.answer) for p in test) + 4
    r = evaluate_task(model, hardest, test, samples=spec.samples, temperature=spec.temperature,
                      ks=tuple(2 ** i for i in range(int(math.log2(spec.samples)) + 1)), seed=spec.seed,
                      max_new_tokens=max_new)
    r.update(format=fmt, size=size, num_params=cfg.model.num_params_total,
             train_flops=summary["flops"], train_tokens=summary["tokens"],
             problems_seen=_problems_seen(mix, summary["tokens"]))
    r["coverage"] = coverage_analysis(r["sampling"])
    s = r["sampling"]
    log(f"  {fmt:10s} {size}: greedy {r['exact_match']:.1%}, majority@{s['ks'][-1]} "
        f"{s['majority_at_k'][-1]:.1%}, pass@{s['ks'][-1]} {s['pass_at_k'][-1]:.1%}")
    return r


def run(spec: TestTimeSpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    hardest = {fmt: Addition(spec.digits, fmt) for fmt in FORMATS}
    cfgs = {f"{fmt}-{Shape.parse(size).name}": run_config(model_dict(Shape.parse(size), max_seq_len=spec.seq_len),
                                                        spec.tokens, spec.lr, spec.batch_size, spec.seq_len, spec.seed)
            for fmt in FORMATS for size in spec.sizes}
    results = []
    with LabProgress(out, cfgs, "test-time compute lab"):
        for fmt in FORMATS:
            mix = spec.mix(fmt)
            test = mix.test_sets()[hardest[fmt].spec]
            ds = task_dataset(mix, out / fmt, spec.train_chars)
            for size in spec.sizes:
                name = f"{fmt}-{Shape.parse(size).name}"
                results.append(_result(spec, fmt, size, cfgs[name], RunDir.under(out, name), ds, mix, hardest[fmt],
                                       test, log))
    summary = {"spec": asdict(spec), "results": results, "comparison": compare(results),
               "compute_matched": compute_matched(results), "seconds": time.perf_counter() - t0}
    figs = plot(results, out)
    write_summary(out, summary)
    _report(out, summary, figs)
    return summary


def _problems_seen(mix: TaskMix, tokens: int) -> float:
    sample = mix.stream(20_000, seed=123)
    return tokens / (len(sample) / sample.count("\n"))


def coverage_analysis(s: dict) -> dict:
    """Fit -log coverage(k) = a k^-b over the ks where 0 < coverage < 1, after checking the per-problem
    difficulty distribution (fraction never solved; beta-binomial fit of the single-sample success rates)."""
    p = np.asarray(s["per_problem_pass1"])
    n = s["samples"]
    out: dict = {"fraction_never_solved": float((p == 0).mean()), "fraction_always_solved": float((p == 1).mean()),
           "fraction_below_0.1": float((p < 0.1).mean()), "median_pass1": float(np.median(p))}
    if 0 < p.mean() < 1:
        out.update(beta_binomial_fit(np.rint(p * n).astype(int), n))
    ks = np.asarray(s["ks"], float)
    cov = np.asarray(s["pass_at_k"])
    ok = (cov > 0) & (cov < 1)
    if ok.sum() >= 3:
        slope, intercept = np.polyfit(np.log(ks[ok]), np.log(-np.log(cov[ok])), 1)
        pred = np.exp(-np.exp(intercept) * ks[ok] ** slope)
        out.update(power_law_a=float(np.exp(intercept)), power_law_b=float(-slope),
                   power_law_max_abs_err=float(np.max(np.abs(pred - cov[ok]))))
    maj = s["majority_at_k"]
    out["coverage_gain"] = float(cov[-1] - cov[0])
    out["majority_gain"] = float(maj[-1] - maj[0])
    out["majority_plateau"] = float(maj[-1] - maj[len(maj) // 2])  # the gain over the last doublings
    return out


def beta_binomial_fit(correct: np.ndarray, n: int) -> dict:
    """Maximum-likelihood Beta(alpha, beta) for the per-problem success rates, from the counts of correct
    samples (a beta-binomial likelihood, so problems never or always solved are handled exactly).
    Schaeffer et al. (2025): near p = 0 the density goes as p^(alpha - 1), so -log coverage ~ k^-alpha."""
    from scipy import optimize, stats

    def nll(theta):
        a, b = np.exp(theta)
        return -stats.betabinom.logpmf(correct, n, a, b).sum()

    res = optimize.minimize(nll, x0=np.log([0.5, 2.0]), method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-8})
    a, b = np.exp(res.x)
    # alpha -> infinity at fixed mean: every problem has the same success rate (no spread in difficulty)
    kind = "homogeneous" if a > 50 else ("heavy left tail" if a < 1 else "light left tail")
    return {"beta_alpha": float(a), "beta_beta": float(b), "difficulty_distribution": kind}


def compare(results: list[dict]) -> list[dict]:
    """Scratchpad vs direct at equal training compute, per size, on the hardest problems."""
    rows = []
    for size in dict.fromkeys(r["size"] for r in results):
        by = {r["format"]: r for r in results if r["size"] == size}
        if set(by) >= set(FORMATS):
            d, s = by["plain"], by["scratchpad"]
            rows.append({"size": size, "train_flops": d["train_flops"], "direct_greedy": d["exact_match"],
                         "scratchpad_greedy": s["exact_match"], "direct_problems_seen": d["problems_seen"],
                         "scratchpad_problems_seen": s["problems_seen"],
                         "direct_flops_per_answer": d["greedy_flops"], "scratchpad_flops_per_answer": s["greedy_flops"],
                         "scratchpad_better": s["exact_match"] > d["exact_match"]})
    return rows


def compute_matched(results: list[dict]) -> list[dict]:
    """For each format: every smaller model's best accuracy within the FLOPs of one greedy answer of the
    largest model, by majority@k (no verifier), best-of-k by likelihood (no verifier) and pass@k."""
    rows = []
    for fmt in FORMATS:
        rs = sorted([r for r in results if r["format"] == fmt], key=lambda r: r["num_params"])
        if len(rs) < 2:
            continue
        big = rs[-1]
        budget = big["greedy_flops"]
        rows.append({"format": fmt, "model": big["size"], "method": "greedy", "k": 1, "flops": budget,
                     "accuracy": big["exact_match"]})
        for r in rs[:-1]:
            s = r["sampling"]
            fit = [i for i, f in enumerate(s["flops"]) if f <= budget * 1.001]
            i = fit[-1] if fit else 0
            rows.append({"format": fmt, "model": r["size"], "method": "greedy", "k": 1, "flops": r["greedy_flops"],
                         "accuracy": r["exact_match"]})
            for method in ("majority_at_k", "best_of_k_likelihood", "pass_at_k"):
                rows.append({"format": fmt, "model": r["size"], "method": method, "k": s["ks"][i],
                             "flops": s["flops"][i], "accuracy": s[method][i]})
    return rows


def plot(results: list[dict], out: Path) -> list[Path]:
    plt = pyplot()
    paths = []
    fig, axes = plt.subplots(1, len(FORMATS), figsize=(12, 4.5), sharey=True)
    for ax, fmt in zip(axes, FORMATS):
        for ci, r in enumerate([r for r in results if r["format"] == fmt]):
            s, color = r["sampling"], f"C{ci}"
            ax.plot(s["flops"], s["pass_at_k"], "-", color=color, label=f"{r['size']} pass@k (verifier)")
            ax.plot(s["flops"], s["majority_at_k"], "--", color=color, label=f"{r['size']} majority@k")
            ax.plot(s["flops"], s["best_of_k_likelihood"], ":", color=color,
                    label=f"{r['size']} best-of-k (likelihood)")
            ax.plot([r["greedy_flops"]], [r["exact_match"]], "*", ms=12, color=color, label=f"{r['size']} greedy")
        ax.set_xscale("log")
        ax.set_xlabel("inference FLOPs per problem")
        ax.set_title("direct answer" if fmt == "plain" else "scratchpad")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("accuracy on the hardest problems")
    fig.tight_layout()
    paths.append(savefig(fig, out, "accuracy_vs_inference_flops"))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    plotted = False
    for ci, r in enumerate(results):
        s, c = r["sampling"], r["coverage"]
        cov = np.asarray(s["pass_at_k"])
        ok = (cov > 0) & (cov < 1)
        label = f"{r['format']} {r['size']}"
        if ok.any():
            axes[0].plot(np.asarray(s["ks"])[ok], -np.log(cov[ok]), "o", color=f"C{ci}", label=label)
            plotted = True
        if "power_law_b" in c:
            ks = np.asarray(s["ks"], float)
            axes[0].plot(ks, c["power_law_a"] * ks ** -c["power_law_b"], "-", color=f"C{ci}", lw=1)
        axes[1].hist(s["per_problem_pass1"], bins=np.linspace(0, 1, 17), histtype="step", color=f"C{ci}", label=label)
    axes[0].set(xlabel="k samples", ylabel="-log coverage@k", title="coverage: power-law fits (lines)")
    if plotted:
        axes[0].set(xscale="log", yscale="log")
        axes[0].legend(fontsize=7)
    axes[1].set(xlabel="per-problem single-sample success rate", ylabel="problems", title="difficulty distribution")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(savefig(fig, out, "coverage"))
    return paths


def _report(out: Path, summary: dict, figs: list[Path]) -> None:
    cmp_rows = summary["comparison"]
    cov_rows = [{"model": f"{r['format']} {r['size']}", "greedy": r["exact_match"],
                 "never solved": r["coverage"]["fraction_never_solved"],
                 "Beta alpha": r["coverage"].get("beta_alpha", math.nan),
                 "difficulty": r["coverage"].get("difficulty_distribution", ""),
                 "power-law b": r["coverage"].get("power_law_b", math.nan),
                 "coverage gain": r["coverage"]["coverage_gain"], "majority gain": r["coverage"]["majority_gain"],
                 "majority gain, last half": r["coverage"]["majority_plateau"]} for r in summary["results"]]
    text = "; ".join(f"{r['size']}: scratchpad {r['scratchpad_greedy']:.1%} vs direct {r['direct_greedy']:.1%} "
                     f"greedy at {r['train_flops']:.3g} training FLOPs" for r in cmp_rows)
    write_report(out, "Inference-time compute", [
        ("Scratchpad vs direct answers at equal training compute", text, [figs[0]], table_html(cmp_rows)),
        ("Coverage, voting and the difficulty distribution",
         "pass@k uses the unbiased estimator over all samples; majority@k and best-of-k average random k-subsets. "
         "A power law in -log coverage needs problems whose single-sample success is small but not zero.",
         [figs[1]], table_html(cov_rows)),
        ("Compute-matched: smaller model with more samples vs the largest model, one answer", "",
         [], table_html(summary["compute_matched"])),
    ])


def headline(s: dict) -> str:
    lines = [f"{r['size']}: scratchpad {r['scratchpad_greedy']:.1%} vs direct {r['direct_greedy']:.1%} greedy on "
             f"{s['spec']['digits']}-digit sums at {r['train_flops']:.3g} training FLOPs" for r in s["comparison"]]
    for r in s["results"]:
        c = r["coverage"]
        if 0.05 < c["coverage_gain"] and "power_law_b" in c:
            lines.append(f"{r['format']} {r['size']}: coverage +{c['coverage_gain']:.1%} "
                         f"from k=1 to k={r['sampling']['ks'][-1]}, "
                         f"majority +{c['majority_gain']:.1%}; -log coverage ~ k^-{c['power_law_b']:.2f} "
                         f"(per-problem success: beta-binomial alpha {c.get('beta_alpha', float('nan')):.3g}, "
                         f"{c.get('difficulty_distribution', '?')}; {c['fraction_never_solved']:.0%} never solved "
                         f"in {r['sampling']['samples']})")
    return "\n".join(lines)
