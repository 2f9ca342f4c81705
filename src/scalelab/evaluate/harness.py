"""Evaluation harness for task models: every metric of a problem set from the same generations.

    score_answers   teacher forcing: per-token log-likelihood of the reference answer (NLL per token,
                    probability of the whole answer) and per-position greedy correctness
    decode          batched greedy or sampled decoding through the KV cache, stopping at a newline,
                    returning completions with their log-probabilities and the tokens generated
    evaluate_task   exact match, per-digit accuracy, token edit distance, NLL, P(answer); with samples:
                    pass@k (unbiased estimator), majority@k, best-of-n by an exact verifier and by the
                    model's own likelihood; inference FLOPs for each setting

Prompts are preceded by a newline, as every problem is in the training stream. Text becomes ids
through a `Codec` (`evaluate/codec.py`): the task labs' characters by default, or a run's own BPE
tokenizer (`TokenizerCodec`), so the same metrics are measured on ladder models trained on text.
Tensors go to the model's device; callers choose autocast.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from scalelab.data.scoring import digit_matches, edit_distance
from scalelab.data.tasks import Problem
from scalelab.evaluate.codec import CHARS, Codec


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, eq. 1):
    1 - C(n-c, k) / C(n, k), computed as a stable product."""
    if k > n:
        raise ValueError(f"k={k} exceeds the number of samples n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_at_k(answers: list[str], correct: str, k: int, rng: np.random.Generator, draws: int = 32) -> float:
    """Probability that a majority vote over k of the samples is correct, estimated over ``draws`` random
    k-subsets (all of them when k equals the number of samples); ties are broken uniformly at random."""
    n = len(answers)
    if k >= n:
        draws = 1
    wins = 0.0
    for _ in range(draws):
        subset = [answers[i] for i in (rng.permutation(n)[:k] if k < n else range(n))]
        counts = Counter(subset)
        top = max(counts.values())
        leaders = [a for a, c in counts.items() if c == top]
        wins += (correct in leaders) / len(leaders)
    return wins / draws


def best_of_k_likelihood(answers: list[str], scores: list[float], correct: str, k: int,
                         rng: np.random.Generator, draws: int = 32) -> float:
    """Probability that the highest-scoring of k samples is correct (score = the model's own
    mean log-probability of its completion), over ``draws`` random k-subsets."""
    n = len(answers)
    if k >= n:
        draws = 1
    wins = 0
    for _ in range(draws):
        idx = rng.permutation(n)[:k] if k < n else np.arange(n)
        best = idx[int(np.argmax([scores[i] for i in idx]))]
        wins += answers[best] == correct
    return wins / draws


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def score_answers(model, problems: list[Problem], batch_size: int = 256, codec: Codec = CHARS) -> dict[str, list]:
    """Teacher-forced log-probabilities of each reference answer (its tokens and the final newline).

    Returns per problem: ``logprobs`` (list per answer token) and ``greedy_ok`` (whether the argmax at each
    answer position is the reference token)."""
    model.eval()
    out = {"logprobs": [], "greedy_ok": []}
    for i in range(0, len(problems), batch_size):
        pairs = [codec.pair(p.prompt, p.answer) for p in problems[i:i + batch_size]]
        seqs = [ctx + ans for ctx, ans in pairs]
        T = max(len(s) for s in seqs)
        x = torch.zeros(len(seqs), T, dtype=torch.long)  # right-padded: causal attention never sees pads
        for r, s in enumerate(seqs):
            x[r, :len(s)] = torch.tensor(s)
        logp = F.log_softmax(model(x.to(_device(model))).logits.float(), dim=-1).cpu()  # (B, T, V)
        for r, ((ctx, ans), s) in enumerate(zip(pairs, seqs)):
            pos = torch.arange(len(ctx) - 1, len(s) - 1)  # the positions that predict the answer tokens
            tgt = torch.tensor(ans)
            out["logprobs"].append(logp[r, pos, tgt].tolist())
            out["greedy_ok"].append((logp[r, pos].argmax(-1) == tgt).tolist())
    return out


@dataclass
class Decoded:
    texts: list[str]  # completion up to (not including) the newline
    logprob: list[float]  # sum of log-probabilities of the generated tokens (including the newline)
    num_tokens: list[int]  # tokens generated


@torch.no_grad()
def decode(model, problems: list[Problem], samples: int = 1, temperature: float = 0.0, max_new_tokens: int = 48,
           seed: int = 0, batch_size: int = 512, codec: Codec = CHARS) -> list[Decoded]:
    """Generate ``samples`` completions per problem (temperature 0 = greedy), batched by prompt length."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    results: list[Decoded | None] = [None] * len(problems)
    contexts = [codec.context(p.prompt) for p in problems]
    by_len: dict[int, list[int]] = {}
    for i, ctx in enumerate(contexts):
        by_len.setdefault(len(ctx), []).append(i)
    per_batch = max(1, batch_size // samples)
    stop = torch.tensor(sorted(codec.stop_ids))
    for _, idxs in sorted(by_len.items()):
        for j in range(0, len(idxs), per_batch):
            group = idxs[j:j + per_batch]
            prompts = torch.tensor([contexts[i] for i in group]).repeat_interleave(samples, 0)
            toks, lps, lens = _decode_batch(model, prompts, max_new_tokens, temperature, gen, stop)
            for g, i in enumerate(group):
                rows = range(g * samples, (g + 1) * samples)
                results[i] = Decoded([codec.decode(toks[r][:lens[r]]).split("\n", 1)[0] for r in rows],
                                     [lps[r] for r in rows], [lens[r] for r in rows])
    return results  # type: ignore[return-value]


def _decode_batch(model, prompts: torch.Tensor, max_new: int, temperature: float, gen, stop: torch.Tensor):
    B, T0 = prompts.shape
    max_new = min(max_new, model.cfg.max_seq_len - T0)
    cache = model.new_cache(B, T0 + max_new)
    dev = _device(model)
    logits = model(prompts.to(dev), cache=cache).logits[:, -1].float().cpu()  # (B, V)
    toks = torch.zeros(B, max_new, dtype=torch.long)
    lp = torch.zeros(B)
    done = torch.zeros(B, dtype=torch.bool)
    lens = torch.full((B,), max_new, dtype=torch.long)
    for t in range(max_new):
        logp = F.log_softmax(logits, -1)
        nxt = logp.argmax(-1) if temperature <= 0 else \
            torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=gen).squeeze(1)
        toks[:, t] = nxt
        lp += torch.where(done, 0.0, logp.gather(1, nxt[:, None]).squeeze(1))
        ended = torch.isin(nxt, stop) & ~done
        lens[ended] = t + 1
        done |= ended
        if bool(done.all()) or t == max_new - 1:
            break
        logits = model(nxt[:, None].to(dev), cache=cache).logits[:, -1].float().cpu()
    return toks.tolist(), lp.tolist(), lens.tolist()


def inference_flops(model_cfg, prompt_tokens: float, generated_tokens: float) -> float:
    """Forward FLOPs to read a prompt and generate a completion (every token once, KV-cached),
    with attention over the average context."""
    n = prompt_tokens + generated_tokens
    return n * model_cfg.forward_flops_per_token(seq_len=max(1, int(round(n))), causal=True)


def evaluate_task(model, task, problems: list[Problem], samples: int = 0, temperature: float = 1.0,
                  ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32), seed: int = 0, max_new_tokens: int = 48,
                  keep_per_problem: bool = False, codec: Codec = CHARS) -> dict:
    """All metrics of one model on one problem set (see the module docstring). ``answer_bpb``: bits per
    UTF-8 byte of the reference answer and its newline, the tokenizer-independent task loss of Bhagia
    et al. 2024 (the `--via` of a task forecast)."""
    tf = score_answers(model, problems, codec=codec)
    greedy = decode(model, problems, 1, 0.0, max_new_tokens, codec=codec)
    preds = [task.answer_of(d.texts[0]) for d in greedy]
    finals = [task.answer_of(p.answer) for p in problems]
    exact = np.array([a == b for a, b in zip(preds, finals)], dtype=float)
    digits = [digit_matches(a, b) for a, b in zip(preds, finals)]
    width = max(len(f) for f in finals)
    pos_acc = [float(np.mean([d[i] for d in digits if i < len(d)])) for i in range(width)]
    nll = np.array([-float(np.mean(lp)) for lp in tf["logprobs"]])
    logp_answer = np.array([float(np.sum(lp)) for lp in tf["logprobs"]])
    tf_pos = [float(np.mean([g[i] for g in tf["greedy_ok"] if i < len(g)]))
              for i in range(max(len(g) for g in tf["greedy_ok"]))]
    answer_bytes = sum(len((p.answer + "\n").encode()) for p in problems)
    prompt_len = float(np.mean([len(codec.context(p.prompt)) for p in problems]))
    gen_len = float(np.mean([d.num_tokens[0] for d in greedy]))
    res = {
        "task": task.spec, "num_problems": len(problems),
        "exact_match": float(exact.mean()),
        "digit_accuracy": float(np.mean([np.mean(d) for d in digits])),
        "position_accuracy": pos_acc,
        "product_position_accuracy": float(np.prod(pos_acc)),
        "teacher_forced_position_accuracy": tf_pos,
        "product_teacher_forced_accuracy": float(np.prod(tf_pos)),
        "edit_distance": float(np.mean([edit_distance(a, b) for a, b in zip(preds, finals)])),
        "answer_nll_per_token": float(nll.mean()),
        "answer_bpb": float(-logp_answer.sum() / (math.log(2) * answer_bytes)),
        "answer_prob": float(np.exp(logp_answer).mean()),
        "greedy_flops": inference_flops(model.cfg, prompt_len, gen_len),
        "by_difficulty": _by_difficulty(problems, exact),
    }
    if samples:
        res["sampling"] = _sampled(model, task, problems, finals, samples, temperature, ks, seed, max_new_tokens,
                                   prompt_len, keep_per_problem, codec)
    if keep_per_problem:
        res["per_problem_exact"] = exact.tolist()
    return res


def _by_difficulty(problems: list[Problem], exact: np.ndarray) -> dict[str, float]:
    out: dict[int, list[float]] = {}
    for p, e in zip(problems, exact):
        out.setdefault(p.difficulty, []).append(e)
    return {str(k): float(np.mean(v)) for k, v in sorted(out.items())}


def _sampled(model, task, problems, finals, n, temperature, ks, seed, max_new, prompt_len, keep, codec) -> dict:
    dec = decode(model, problems, n, temperature, max_new, seed=seed, codec=codec)
    rng = np.random.default_rng(seed)
    ks = [k for k in ks if k <= n]
    answers = [[task.answer_of(t) for t in d.texts] for d in dec]
    correct = [sum(a == f for a in ans) for ans, f in zip(answers, finals)]
    # the likelihood scorer: mean log-probability per generated token (length-normalised)
    scores = [[lp / max(1, m) for lp, m in zip(d.logprob, d.num_tokens)] for d in dec]
    gen_len = float(np.mean([np.mean(d.num_tokens) for d in dec]))
    per_sample_flops = inference_flops(model.cfg, prompt_len, gen_len)
    out = {"samples": n, "temperature": temperature, "ks": ks, "flops_per_sample": per_sample_flops,
           "pass_at_k": [], "majority_at_k": [], "best_of_k_likelihood": [], "flops": []}
    for k in ks:
        out["pass_at_k"].append(float(np.mean([pass_at_k(n, c, k) for c in correct])))
        out["majority_at_k"].append(float(np.mean([majority_at_k(a, f, k, rng) for a, f in zip(answers, finals)])))
        out["best_of_k_likelihood"].append(float(np.mean(
            [best_of_k_likelihood(a, s, f, k, rng) for a, s, f in zip(answers, scores, finals)])))
        # k samples share one prompt read; the k completions are generated in full
        out["flops"].append(inference_flops(model.cfg, prompt_len, 0) + k * (per_sample_flops -
                                                                             inference_flops(model.cfg, prompt_len, 0)))
    out["per_problem_pass1"] = [c / n for c in correct]
    out["best_of_k_verifier"] = out["pass_at_k"]  # an exact verifier picks a correct sample whenever one exists
    return out


def logistic(x, lo, hi, mid, width):
    return lo + (hi - lo) / (1 + np.exp(-(x - mid) / width))


def fit_logistic(x: np.ndarray, y: np.ndarray) -> dict:
    """Fit y = lo + (hi - lo) * sigmoid((x - mid) / width); x is usually log10 of parameters or FLOPs.
    Returns the midpoint and the width (in units of x: decades) and the fitted range."""
    from scipy.optimize import OptimizeWarning, curve_fit

    warnings.simplefilter("ignore", OptimizeWarning)

    x, y = np.asarray(x, float), np.asarray(y, float)
    lo0, hi0 = float(y.min()), float(y.max())
    if len(x) < 4 or hi0 - lo0 < 1e-9:  # four parameters need four points and some change
        return {"midpoint": math.nan, "width": math.nan, "lo": lo0, "hi": hi0, "ok": False}
    sign = 1.0 if y[np.argmax(x)] >= y[np.argmin(x)] else -1.0
    mid0 = float(x[np.argmin(np.abs(y - (lo0 + hi0) / 2))])
    try:
        p, _ = curve_fit(logistic, x, y, p0=[lo0 if sign > 0 else hi0, hi0 if sign > 0 else lo0, mid0,
                                            0.2 * (x.max() - x.min() + 1e-9)], maxfev=20000)
        lo, hi, mid, width = (float(v) for v in p)
        if width < 0:
            lo, hi, width = hi, lo, -width
    except (RuntimeError, ValueError, TypeError):
        return {"midpoint": math.nan, "width": math.nan, "lo": lo0, "hi": hi0, "ok": False}
    return {"midpoint": mid, "width": abs(width), "lo": lo, "hi": hi, "ok": True}


def emergence_score(x: np.ndarray, y: np.ndarray) -> float:
    """BIG-bench's emergence score (Srivastava et al. 2022, appendix): the signed total rise over the
    root-median squared step between consecutive scales. Large = one sudden jump, small = smooth."""
    order = np.argsort(x)
    y = np.asarray(y, float)[order]
    steps = np.diff(y)
    if len(steps) == 0:
        return 0.0
    denom = math.sqrt(float(np.median(steps ** 2))) or 1e-12
    sign = 1.0 if np.argmax(y) > np.argmin(y) else -1.0
    return sign * float(y.max() - y.min()) / denom
