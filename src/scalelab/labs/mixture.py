"""Which data mix? Proxy runs at random mixtures, a mixture law, and its choice checked at 4x (RegMix's recipe).

Three domains are cut from the offline corpus (Python's standard library), each split into training and
held-out documents by a hash of their name:
    code   every module's code with docstrings and comments removed (`ast.unparse`)
    prose  the docstrings and comments of those modules
    tests  the standard library's own test modules, as written
The lab trains ``proxies`` small models, each on a random mixture (Dirichlet(1) over the domains, by bytes) and
scores each on every domain's held-out text; fits the mixture law (``method``; default dml, the form that ranked
RegMix's 1B mixtures best in `scalelab backtest --mixtures`); lets it choose the mixture that minimises
``target`` under each domain's supply (the 4x model reads 4x the bytes: a small domain would repeat, which the
proxies never did); writes to ``forecast.json`` the law's forecast for the chosen, the natural (each domain as much as
it has) and the uniform mix *before* training a model 4x larger on each; then compares. The law speaks at the
proxies' size, so the check is its ranking of the three mixes and the sign of the predicted gains.
"""

from __future__ import annotations

import ast
import io
import time
import tokenize
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.data.corpora import is_validation
from scalelab.data.tokenizer import load_tokenizer
from scalelab.errors import UserError
from scalelab.io import atomic_write_json, read_json
from scalelab.labs.common import (
    Shape,
    TrainSettings,
    begin,
    corpus_head,
    pyplot,
    savefig,
    train_or_load,
    write_documents,
    write_report,
    write_summary,
)
from scalelab.labs.progress import LabProgress
from scalelab.labs.quality import perplexity_scores
from scalelab.laws.mixture import METHODS, MixtureMethod, read_mixtures
from scalelab.laws.mixture_plan import plan_mixture
from scalelab.report.page import table_html
from scalelab.train.loop import load_dataset
from scalelab.train.rundir import RunDir

DOMAINS = ("code", "prose", "tests")
VAL_FRACTION = 0.1
CHUNK_CHARS = 4000


@dataclass(frozen=True)
class MixtureSpec(TrainSettings):
    proxy: str = "16x2"
    target_size: str = "32x4"
    """the checked model: about 4x the proxy's parameters at the default sizes."""
    proxies: int = 16
    proxy_tokens: int = 300_000
    target_tokens: int = 1_200_000
    method: str = "dml"
    target: str = "mean"
    """mean of the domains' held-out losses, a domain, or DOMAIN=WEIGHT pairs."""
    eval_tokens_per_domain: int = 32_768
    max_bytes: int = 12_000_000

    def validate(self) -> MixtureSpec:
        Shape.parse(self.proxy), Shape.parse(self.target_size)
        if self.method not in METHODS:
            raise UserError(f"method must be one of {', '.join(METHODS)}", arg="method")
        if self.proxies < 10:
            raise UserError("proxies must be >= 10 (the law's intervals come from 5-fold cross-validation)",
                            arg="proxies")
        return self


QUICK = dict(proxies=10, proxy="16x1", target_size="32x2", proxy_tokens=100_000, target_tokens=300_000,
             eval_tokens_per_domain=8192, max_bytes=4_000_000)


def _strip(src: str) -> tuple[str, str]:
    """(code without docstrings and comments, the docstrings and comments) of one module."""
    tree = ast.parse(src)
    prose = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and \
                node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            prose.append(node.body[0].value.value)
            node.body = node.body[1:] or [ast.Pass()]
    comments = [t.string.lstrip("# ") for t in tokenize.generate_tokens(io.StringIO(src).readline)
                if t.type == tokenize.COMMENT]
    return ast.unparse(tree), "\n".join(prose + comments)


def domain_documents(spec: MixtureSpec) -> dict[str, list[tuple[str, str]]]:
    """domain -> (doc_id, text) of the offline corpus's modules."""
    out: dict[str, list] = {d: [] for d in DOMAINS}
    for doc_id, text in corpus_head("stdlib", spec.max_bytes):
        name = doc_id.rsplit("/", 1)[-1]
        if name.startswith("test_"):
            out["tests"].append((doc_id, text))
            continue
        try:
            code, prose = _strip(text)
        except (SyntaxError, ValueError, tokenize.TokenError, RecursionError):
            continue
        out["code"].append((doc_id + "#code", code))
        if prose.strip():
            out["prose"].append((doc_id + "#prose", prose))
    if any(len(v) < 20 for v in out.values()):
        raise UserError(f"max_bytes={spec.max_bytes:,} leaves a domain with fewer than 20 documents; raise it",
                        arg="max_bytes")
    return out


def _split(docs):
    """(train, held-out) by a hash of the module, so a module's code and prose fall on the same side."""
    held = [is_validation(i.split("#")[0], VAL_FRACTION) for i, _ in docs]
    return [d for d, h in zip(docs, held) if not h], [d for d, h in zip(docs, held) if h]


def write_mixture(path: Path, train: dict, w: np.ndarray, total_bytes: int, seed: int) -> None:
    """A corpus of ``total_bytes`` whose domains' byte shares are ``w`` (documents cycled if a domain runs out)."""
    rng = np.random.default_rng(seed)
    rows = []
    for d, share in zip(DOMAINS, w):
        want, docs = share * total_bytes, train[d]
        order, got, k = rng.permutation(len(docs)), 0, 0
        while got < want:
            i, t = docs[order[k % len(docs)]]
            for c in range(0, len(t), CHUNK_CHARS):  # pieces, so small corpora still split into train and val
                rows.append((f"{i}@{k // len(docs)}:{c}", t[c:c + CHUNK_CHARS], d))
            got, k = got + len(t.encode()), k + 1
    rng.shuffle(rows)
    write_documents(path, rows)


FIRST_RUN = "proxy00"
BYTES_PER_TOKEN = 3  # a generous bound at vocab 512 (about 2 bytes per token on this corpus: LOG 2026-11-22)


class _Runner:
    """Trains one model per mixture on its own corpus (the shared tokenizer) and scores each domain."""

    def __init__(self, spec: MixtureSpec, out: Path, train: dict, val: dict, log):
        self.spec, self.out, self.train, self.log = spec, out, train, log
        self.val = {d: "\n".join(t for _, t in v)[: spec.eval_tokens_per_domain * 8] for d, v in val.items()}
        self.tok_file = out / "data" / "tokenizer.json"

    def config(self, name: str, size: str, w: np.ndarray, tokens: int, seed: int):
        corpus = self.out / "data" / f"{name}.jsonl"
        if not corpus.exists():
            write_mixture(corpus, self.train, w, tokens * BYTES_PER_TOKEN, seed)
        # the first proxy trains the shared tokenizer; the others (and its own rerun) read it: each run's config
        # stays what it was, so a rerun reuses every run (run identity)
        tok = "" if name == FIRST_RUN else str(self.tok_file.resolve())
        data = asdict(replace(self.spec.data, corpus=str(corpus.resolve()), id_field="id", tokenizer=tok))
        return self.spec.run_config(size, tokens, data=data)

    def run(self, name: str, size: str, w: np.ndarray, tokens: int, seed: int = 0) -> dict:
        cfg = self.config(name, size, w, tokens, seed)
        ds = load_dataset(cfg, log=lambda *a: None)
        if name == FIRST_RUN and not self.tok_file.exists():  # the first run's tokenizer serves every other
            self.tok_file.write_bytes((ds.path / "tokenizer.json").read_bytes())
        model, _ = train_or_load(cfg, RunDir.under(self.out, name), ds, self.log)
        tok = load_tokenizer(self.tok_file)
        losses = {d: float(perplexity_scores(model, tok, [text], self.spec.seq_len,
                                             self.spec.eval_tokens_per_domain)[0]) for d, text in self.val.items()}
        return {"run": name, **{f"w_{d}": float(x) for d, x in zip(DOMAINS, w)},
                **{f"loss_{d}": losses[d] for d in DOMAINS}}


def _forecasts(out: Path, fitted, mixes: dict, target: str) -> dict:
    """The law's forecast of each mix, written before the 4x models train (a rerun reads it back)."""
    path = out / "forecast.json"
    if path.exists():
        return read_json(path, "forecast")
    fc = {k: fitted.forecast(dict(zip(DOMAINS, w)), 0.9, target) for k, w in mixes.items()}
    atomic_write_json(path, {"written_before_training": True, **fc})
    return fc


def run(spec: MixtureSpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    split = {d: _split(v) for d, v in domain_documents(spec).items()}
    train, val = {d: s[0] for d, s in split.items()}, {d: s[1] for d, s in split.items()}
    sizes = np.array([sum(len(t.encode()) for _, t in train[d]) for d in DOMAINS], float)
    runner = _Runner(spec, out, train, val, log)
    W = np.random.default_rng(spec.seed).dirichlet(np.ones(len(DOMAINS)), spec.proxies)
    with LabProgress(out, {}, "mixture lab"):
        proxies = [runner.run(f"proxy{k:02d}", spec.proxy, w, spec.proxy_tokens, k) for k, w in enumerate(W)]
    fitted = MixtureMethod(spec.method).fit(read_mixtures(pd.DataFrame(proxies).drop(columns="run")))
    # the 4x model reads target_tokens x BYTES_PER_TOKEN bytes: a domain asked for more than it has repeats
    # (the proxies, 4x smaller, never did), costed by Muennighoff's law and capped at 4 epochs
    plan = plan_mixture(fitted, target=spec.target, natural=dict(zip(DOMAINS, sizes / sizes.sum())),
                        supply=dict(zip(DOMAINS, sizes)), tokens=spec.target_tokens * BYTES_PER_TOKEN)
    mixes = {"chosen": np.array([plan["best"]["mixture"][d] for d in DOMAINS]), "natural": sizes / sizes.sum(),
             "uniform": np.full(len(DOMAINS), 1 / len(DOMAINS))}
    fc = _forecasts(out, fitted, mixes, spec.target)
    mixes = {k: np.array([fc[k]["mixture"][d] for d in DOMAINS]) for k in mixes}  # as forecast
    tw = fitted.target_weights(spec.target)
    checked = {k: runner.run(f"{Shape.parse(spec.target_size).name}-{k}", spec.target_size, w, spec.target_tokens)
               for k, w in mixes.items()}
    rows = [{"mix": k, **{d: round(float(mixes[k][i]), 3) for i, d in enumerate(DOMAINS)},
             "forecast_target": fc[k]["target"]["loss"], "measured_target": float(
                 np.array([checked[k][f"loss_{d}"] for d in DOMAINS]) @ tw)} for k in mixes]
    summary = {"spec": asdict(spec), "domain_bytes": dict(zip(DOMAINS, sizes.tolist())), "proxies": proxies,
               "plan": plan, "forecast": fc, "checked": checked, "mixes": rows, "seconds": time.perf_counter() - t0}
    summary["verdict"] = _verdict(rows)
    figs = plot(proxies, rows, out)
    write_summary(out, summary)
    write_report(out, "Mixture lab: which data mix?", [("The law's choice, checked at 4x", headline(summary), figs,
                                                        table_html(rows)), ("Proxy runs", "", [], table_html(proxies))])
    return summary


def _verdict(rows: list[dict]) -> dict:
    by = {r["mix"]: r for r in rows}
    f_order = sorted(by, key=lambda k: by[k]["forecast_target"])
    m_order = sorted(by, key=lambda k: by[k]["measured_target"])
    return {"forecast_order": f_order, "measured_order": m_order, "chosen_best": m_order[0] == "chosen",
            "gain_vs_natural": {"forecast": by["chosen"]["forecast_target"] - by["natural"]["forecast_target"],
                                "measured": by["chosen"]["measured_target"] - by["natural"]["measured_target"]},
            "gain_vs_uniform": {"forecast": by["chosen"]["forecast_target"] - by["uniform"]["forecast_target"],
                                "measured": by["chosen"]["measured_target"] - by["uniform"]["measured_target"]}}


def plot(proxies: list[dict], rows: list[dict], out: Path) -> list[Path]:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    p = pd.DataFrame(proxies)
    for d in DOMAINS:
        a.scatter(p[f"w_{d}"], p[f"loss_{d}"], s=12, label=d)
    a.set(xlabel="the domain's share of the proxy's data", ylabel="held-out loss on the domain",
          title="proxy runs: each domain's loss against its share")
    a.legend(fontsize=7)
    x = np.arange(len(rows))
    b.bar(x - 0.2, [r["forecast_target"] for r in rows], 0.4, label="forecast (proxy size)")
    b.bar(x + 0.2, [r["measured_target"] for r in rows], 0.4, label="measured (4x)")
    b.set_xticks(x, [r["mix"] for r in rows])
    b.set(ylabel="target loss", title="the three mixes")
    b.legend(fontsize=7)
    return [savefig(fig, out, "mixture")]


def headline(s: dict) -> str:
    v, rows = s["verdict"], {r["mix"]: r for r in s["mixes"]}
    c = rows["chosen"]
    mix = ", ".join(f"{d} {c[d]:.2f}" for d in DOMAINS)
    return (f"chosen mix ({mix}): measured {c['measured_target']:.4f} at 4x; forecast order "
            f"{' < '.join(v['forecast_order'])}, measured {' < '.join(v['measured_order'])}; gain vs natural "
            f"forecast {v['gain_vs_natural']['forecast']:+.4f}, measured {v['gain_vs_natural']['measured']:+.4f}; "
            f"vs uniform forecast {v['gain_vs_uniform']['forecast']:+.4f}, measured "
            f"{v['gain_vs_uniform']['measured']:+.4f}")
