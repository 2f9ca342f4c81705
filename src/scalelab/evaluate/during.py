"""`TaskEvaluator`: the tasks of a run's `[tasks]` config, measured at every evaluation of the training
loop on held-out problems (`data.tasks.heldout`), through the run's own tokenizer.

The metrics kept per task and evaluation (one `MetricsRecord.tasks` entry, streamed into a ladder's
store and exported by `ladder export --tasks`) are the harness's scalar ones: the task loss a forecast
chains through (``answer_bpb``, ``answer_nll_per_token``) and what it forecasts (``exact_match`` ...).
"""

from __future__ import annotations

from scalelab.config import TasksConfig
from scalelab.data.tasks import heldout, parse_task
from scalelab.evaluate.codec import TokenizerCodec
from scalelab.evaluate.harness import evaluate_task

METRICS = ("exact_match", "digit_accuracy", "edit_distance", "answer_nll_per_token", "answer_bpb", "answer_prob")


class TaskEvaluator:
    def __init__(self, cfg: TasksConfig, tokenizer):
        self.codec = TokenizerCodec(tokenizer)
        self.max_new_tokens = cfg.max_new_tokens
        trained = cfg.train_fraction > 0
        self.sets = [(task, heldout(task, cfg.eval_problems, trained)) for task in map(parse_task, cfg.names)]

    def __call__(self, model) -> dict[str, dict[str, float]]:
        """{task spec: {metric: value}}; leaves the model in eval mode."""
        out = {}
        for task, problems in self.sets:
            res = evaluate_task(model, task, problems, max_new_tokens=self.max_new_tokens, codec=self.codec)
            out[task.spec] = {k: res[k] for k in METRICS}
        return out
