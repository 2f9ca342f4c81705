"""`ensure_trained`: the one way every caller (the local and Ray ladder executors, every lab, the
demo) gets a trained run, and `load_run` to read one back.

    run complete (summary.json)      -> reuse it, train nothing
    run started (a checkpoint)       -> resume it from its newest checkpoint (exactly, on CPU)
    a branch point named, no start   -> seed the run from that checkpoint, then train (WSD cooldown)
    otherwise                        -> train from scratch

The run's config.json always describes the whole run, branches included (their cooldown start is
`schedule.decay_start_step`), so `scalelab train RUN/config.json` retrains any of them from scratch.
"""

from __future__ import annotations

from pathlib import Path

from scalelab.config import RunConfig
from scalelab.data.tokenizer import load_tokenizer
from scalelab.errors import UserError
from scalelab.model.transformer import Transformer
from scalelab.train.checkpoint import load_checkpoint, seed_from
from scalelab.train.hooks import Hooks
from scalelab.train.loop import train
from scalelab.train.rundir import RunDir


def quiet(*args, **kwargs) -> None:
    """A log function that drops the loop's messages (ladders and labs show their own progress)."""


def ensure_trained(cfg: RunConfig, run_dir: str | Path | RunDir, *, dataset=None, hooks: Hooks | None = None,
                   branch_from: Path | None = None, branch_points: tuple[int, ...] = (), log=quiet) -> dict:
    """Reuse, resume, seed from ``branch_from`` or train ``cfg`` into ``run_dir``; -> the run summary.

    ``branch_points``: steps whose checkpoints are kept under branch_points/ for later branches."""
    run = RunDir.of(run_dir)
    run.check_same_run(cfg, fix="give it another --out, or delete that run to train it again")
    summary = run.summary_or_none()
    if summary is not None:
        return summary
    if branch_from is not None and not run.has_checkpoint():
        if not (Path(branch_from) / "state.json").exists():
            raise UserError(f"branch point {branch_from} is missing; train the run it belongs to first")
        seed_from(branch_from, run)
    return train(cfg, run, resume=run.has_checkpoint(), dataset=dataset, hooks=hooks,
                 branch_points=branch_points, log=log)


def load_run(run_dir: str | Path | RunDir, device: str = "cpu", checkpoint: Path | None = None):
    """(model in eval mode, config, tokenizer) from a run's newest checkpoint (or ``checkpoint``)."""
    run = RunDir.of(run_dir)
    cfg = run.read_config()
    ckpt = checkpoint or run.latest_checkpoint()
    if ckpt is None:
        raise UserError(f"{run.path} has no checkpoint yet; train it first")
    model = Transformer(cfg.model)
    load_checkpoint(ckpt, model)
    return model.to(device).eval(), cfg, load_tokenizer(run.tokenizer_file)
