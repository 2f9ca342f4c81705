"""Real benchmarks through lm-evaluation-harness (`pip install 'scalelab[eval]'`): `ScalelabLM` is an
`lm_eval.api.model.LM` over one of our models and its own tokenizer, so any harness task (HellaSwag,
ARC, LAMBADA, a local YAML task with local data files ...) scores a run directly, without an export.

The three request types, as the harness's own HF model implements them:

    loglikelihood(context, continuation)   sum of log p(continuation tokens | context) and whether each
                                           was the greedy choice; the continuation's ids are the rest of
                                           the whole string's encoding (the harness's split); an empty
                                           context reads the end-of-text token first
    loglikelihood_rolling(text)            the whole text's log-likelihood, in windows of the context
                                           length (each token predicted once, with up to max_len of history)
    generate_until(context, {until, max_gen_toks})   greedy decoding until a stop string

Contexts longer than the model's context keep their last tokens. `evaluate_run` writes the results
beside the run (RUN/lm_eval.json) and `evaluate_ladder` also into the ladder's store as task points
at each run's last step (task ``lm_eval/<name>``), which `ladder export --tasks` exports and
`fit --metric acc` forecasts.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from scalelab.data.tokenizer import end_of_text
from scalelab.errors import UserError
from scalelab.io import atomic_write_json, read_json
from scalelab.ladder.results import open_store
from scalelab.train.records import MetricsRecord
from scalelab.train.rundir import RunDir
from scalelab.train.runner import load_run

try:  # the [eval] extra
    from lm_eval.api.model import LM as _LM
except ImportError:  # pragma: no cover - without the extra, `scalelab eval` says which to install
    _LM = object


class ScalelabLM(_LM):
    def __init__(self, model, tokenizer, batch_size: int = 16):
        super().__init__()
        self.model, self.tok, self.batch_size = model.eval(), tokenizer, batch_size
        self.max_len = model.cfg.max_seq_len
        self.eot = end_of_text(tokenizer)[1]
        self.dev = next(model.parameters()).device

    def _encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def _pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        # trailing spaces of the context belong to the continuation (the harness's own rule)
        n = len(context) - len(context.rstrip())
        context, continuation = context[:len(context) - n], context[len(context) - n:] + continuation
        whole, ctx = self._encode(context + continuation), self._encode(context)
        ctx = ctx if ctx else [self.eot]
        cont = whole[len(ctx):] if whole[:len(ctx)] == ctx else self._encode(continuation)
        return ctx, cont

    @torch.no_grad()
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum log p(cont | ctx), all greedy) for each (ctx ids, cont ids), batched, right-padded."""
        out = []
        for i in range(0, len(pairs), self.batch_size):
            seqs = [(ctx + cont)[-(self.max_len + 1):] for ctx, cont in pairs[i:i + self.batch_size]]
            T = max(len(s) for s in seqs) - 1
            x = torch.zeros(len(seqs), T, dtype=torch.long)
            for r, s in enumerate(seqs):
                x[r, :len(s) - 1] = torch.tensor(s[:-1])
            logp = F.log_softmax(self.model(x.to(self.dev)).logits.float(), -1).cpu()  # (B, T, V)
            for r, ((_, cont), s) in enumerate(zip(pairs[i:i + self.batch_size], seqs)):
                pos = torch.arange(len(s) - 1 - len(cont), len(s) - 1)
                tgt = torch.tensor(cont)
                lp = logp[r, pos, tgt]
                out.append((float(lp.sum()), bool((logp[r, pos].argmax(-1) == tgt).all())))
        return out

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        return self._score([self._pair(*req.args) for req in requests])

    def loglikelihood_rolling(self, requests) -> list[float]:
        out = []
        for req in requests:
            ids = [self.eot] + self._encode(req.args[0])
            windows = [(ids[max(0, j - self.max_len):j], ids[j:j + self.max_len])
                       for j in range(1, len(ids), self.max_len)]
            out.append(sum(lp for lp, _ in self._score(windows)))
        return out

    @torch.no_grad()
    def generate_until(self, requests) -> list[str]:
        out = []
        for req in requests:
            context, kw = req.args
            until = kw.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            ids = (self._encode(context) or [self.eot])[-(self.max_len - 1):]
            text = self._greedy(ids, int(kw.get("max_gen_toks", 256)), until)
            out.append(text)
        return out

    def _greedy(self, ids: list[int], max_new: int, until: list[str]) -> str:
        new: list[int] = []
        for _ in range(min(max_new, self.max_len - len(ids))):
            x = torch.tensor([(ids + new)[-self.max_len:]], device=self.dev)
            nxt = int(self.model(x).logits[0, -1].argmax())
            if nxt == self.eot:
                break
            new.append(nxt)
            text = self.tok.decode(new)
            if any(u in text for u in until):
                return text[:min(text.index(u) for u in until if u in text)]
        return self.tok.decode(new)


def require_lm_eval() -> None:
    if _LM is object:
        raise UserError("scalelab eval needs lm-evaluation-harness: pip install 'scalelab[eval]'")


def run_harness(model, tokenizer, tasks: list[str], include_path: str | None = None, limit: float | None = None,
                num_fewshot: int | None = None, batch_size: int = 16) -> dict:
    """{task: {metric: value}} from `lm_eval.simple_evaluate` (metric names without the harness's
    ",none" filter suffix; standard errors as ``<metric>_stderr``)."""
    require_lm_eval()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm-eval").setLevel(logging.WARNING)
    manager = TaskManager(include_path=include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"tasks: lm-evaluation-harness has no task {unknown[0]!r}; `lm_eval ls tasks` lists "
                        "them, --include-path adds a folder of your own YAML tasks", arg="tasks")
    try:
        res = simple_evaluate(model=ScalelabLM(model, tokenizer, batch_size), tasks=tasks, task_manager=manager,
                              limit=limit, num_fewshot=num_fewshot, log_samples=False, bootstrap_iters=0)
    except (ConnectionError, OSError) as e:  # a hub dataset without the network (or an unreadable local one)
        raise UserError(f"tasks: cannot load a task's dataset ({str(e).splitlines()[0]}); hub tasks need the "
                        "network or a local Hugging Face cache, local ones their data files", arg="tasks") from None
    return {task: {k.split(",")[0]: float(v) for k, v in m.items() if "," in k and _number(v)}
            for task, m in res["results"].items()}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def evaluate_run(run_dir, tasks: list[str], **kw) -> dict:
    """Evaluate a run's newest checkpoint; merge the results into RUN/lm_eval.json (atomic) and return
    {"run", "step", "results": {task: {metric: value}}}."""
    run = RunDir.of(run_dir)
    model, cfg, tok = load_run(run)
    step = int(run.latest_checkpoint().name.split("_")[-1])
    results = run_harness(model, tok, tasks, **kw)
    path = run.path / "lm_eval.json"
    kept = read_json(path, "lm_eval results") if path.exists() else {}
    if kept.get("step") != step:  # results of an older checkpoint are not this model's
        kept = {}
    merged = {"run": str(run.path), "step": step, "results": {**kept.get("results", {}), **results}}
    atomic_write_json(path, merged)
    return {**merged, "results": results}


def evaluate_ladder(ladder_dir, tasks: list[str], progress=print, **kw) -> list[dict]:
    """Every finished run of a ladder, each result also stored in the ladder's store as task points
    (task ``lm_eval/<name>``) at the run's last step."""
    store = open_store(ladder_dir)
    try:
        done = store.runs("done")
        if not done:
            raise UserError(f"{ladder_dir} has no finished runs to evaluate")
        out = []
        for i, r in enumerate(done, 1):
            res = evaluate_run(Path(ladder_dir) / "runs" / r["name"], tasks, **kw)  # (the store's path may be relative)
            last = [rec for name, rec in store.records(r["name"]) if rec.step == r["steps"]]
            if last:  # the run's final record, with the benchmark's metrics beside its own task metrics
                tasks_now = {**(last[0].tasks or {}), **{f"lm_eval/{t}": m for t, m in res["results"].items()}}
                store.add_point(r["name"], MetricsRecord.from_dict({**last[0].to_dict(), "tasks": tasks_now}))
            progress(f"[{i}/{len(done)}] {r['name']}: " + ", ".join(
                f"{t} {m.get('acc', next(iter(m.values()), float('nan'))):.3f}" for t, m in res["results"].items()))
            out.append(res)
        return out
    finally:
        store.close()
