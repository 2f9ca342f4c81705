"""Experiment trackers fed with every metrics record, where ML researchers compare runs.

    train.loggers = ["tensorboard", "mlflow", "wandb"]   (default: none; `pip install 'scalelab[track]'`)

    tensorboard  event files in RUN/tensorboard/ (torch's SummaryWriter). A ladder's rungs are
                 OUT/runs/<name>/, so `tensorboard --logdir OUT/runs` shows them side by side.
    mlflow       one MLflow run per run directory, named after it, in experiment "<ladder folder>" for a
                 ladder's rungs (grouped by ladder) or "scalelab"; tracking URI $MLFLOW_TRACKING_URI, else
                 a SQLite store beside the runs (OUT/mlflow.db for a ladder, RUN/mlflow.db alone:
                 `mlflow ui --backend-store-uri sqlite:///OUT/mlflow.db`), artifacts in mlartifacts/
                 beside it. The resolved config is logged as parameters and config.json as an artifact.
    wandb        one W&B run per run directory (named after it, grouped by ladder, the resolved config as
                 its config), offline unless $WANDB_MODE=online: RUN/wandb/offline-run-*, which
                 `wandb sync` uploads; project $WANDB_PROJECT or "scalelab".

A resumed run continues where it stopped: TensorBoard purges the events after the checkpoint's step,
and the MLflow and W&B runs (their ids kept in RUN/tracking.json) are reopened, MLflow's metrics past
the checkpoint overwritten by the same steps. Metric names are the record's fields (train_loss, val_loss, lr,
mfu ...), with task metrics as tasks/<task>/<metric>.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from pathlib import Path

from scalelab.config import RunConfig
from scalelab.errors import UserError
from scalelab.io import atomic_write_json
from scalelab.train.hooks import Hooks
from scalelab.train.records import MetricsRecord
from scalelab.train.rundir import RunDir

LOGGERS = ("tensorboard", "mlflow", "wandb")


def scalars(rec: MetricsRecord) -> dict[str, float]:
    """The record's numbers under tracker names (step is the x axis, not a metric)."""
    out = {}
    for k, v in rec.to_dict().items():
        if k == "step":
            continue
        if k == "tasks":
            out.update({f"tasks/{t}/{m}": float(x) for t, ms in v.items() for m, x in ms.items()})
        elif k == "expert_load":
            out.update({f"expert_load/{i}": float(x) for i, x in enumerate(v)})
        else:
            out[k] = float(v)
    return out


def ladder_of(run: RunDir) -> Path | None:
    """The ladder directory a run belongs to (OUT for OUT/runs/<name> beside OUT/ladder.sqlite), or None."""
    parent = run.path.resolve().parent
    return parent.parent if parent.name == "runs" and (parent.parent / "ladder.sqlite").exists() else None


class TensorBoard(Hooks):
    def __init__(self, run: RunDir, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        if start_step == 0:  # a run trained again from scratch: its old curves would mix with the new
            shutil.rmtree(run.path / "tensorboard", ignore_errors=True)
        self.writer = SummaryWriter(str(run.path / "tensorboard"), purge_step=start_step + 1 if start_step else None)

    def on_record(self, rec: MetricsRecord) -> None:
        for k, v in scalars(rec).items():
            self.writer.add_scalar(k, v, rec.step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def prepare_mlflow(home: Path, name: str | None = None):
    """Point MLflow at its store for ``home`` (a ladder or run folder; $MLFLOW_TRACKING_URI wins) and make the
    experiment: the store's schema is made here, once (a ladder does it before its parallel workers start,
    whose simultaneous SQLite migrations would collide). Returns the mlflow module."""
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its store migrations talk at INFO
    own = os.environ.get("MLFLOW_TRACKING_URI") is None
    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home.resolve() / 'mlflow.db'}")
    name = name or home.name
    if own and mlflow.get_experiment_by_name(name) is None:  # artifacts beside the store, not in the cwd
        mlflow.create_experiment(name, artifact_location=(home.resolve() / "mlartifacts").as_uri())
    mlflow.set_experiment(name)
    return mlflow


class MLflow(Hooks):
    def __init__(self, cfg: RunConfig, run: RunDir, resumed: bool):
        ladder = ladder_of(run)
        mlflow = prepare_mlflow(ladder or run.path, ladder.name if ladder else "scalelab")
        self.mlflow = mlflow
        known = _ids(run).get("mlflow_run_id") if resumed else None
        self.active = mlflow.start_run(run_id=known) if known else mlflow.start_run(run_name=run.path.name)
        if not known:
            _save_id(run, "mlflow_run_id", self.active.info.run_id)
            mlflow.log_params(_flat(cfg.to_dict()))
            mlflow.log_dict(cfg.to_dict(), "config.json")
            if ladder is not None:
                mlflow.set_tag("ladder", str(ladder))

    def on_record(self, rec: MetricsRecord) -> None:
        self.mlflow.log_metrics(scalars(rec), step=rec.step)

    def close(self) -> None:
        self.mlflow.end_run()


class WandB(Hooks):
    """One W&B run per run directory, offline unless $WANDB_MODE says otherwise (files in RUN/wandb/;
    `wandb sync RUN/wandb/offline-run-*` uploads them), grouped by ladder; a resumed run keeps its id."""

    def __init__(self, cfg: RunConfig, run: RunDir, resumed: bool):
        import wandb

        ladder = ladder_of(run)
        known = _ids(run).get("wandb_run_id") if resumed else None
        run_id = known or secrets.token_hex(4)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "scalelab"), name=run.path.name, id=run_id,
                              group=ladder.name if ladder else None, dir=str(run.path), resume="allow",
                              mode=os.environ.get("WANDB_MODE", "offline"), config=cfg.to_dict(),
                              settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        if not known:
            _save_id(run, "wandb_run_id", run_id)

    def on_record(self, rec: MetricsRecord) -> None:
        self.run.log(scalars(rec), step=rec.step)

    def close(self) -> None:
        self.run.finish()


def _ids(run: RunDir) -> dict:
    """The trackers' run ids kept in RUN/tracking.json (so a resumed run reopens its own)."""
    path = run.path / "tracking.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save_id(run: RunDir, key: str, value: str) -> None:
    atomic_write_json(run.path / "tracking.json", {**_ids(run), key: value})


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)[:500]
    return out


def open_trackers(cfg: RunConfig, run: RunDir, start_step: int) -> list[Hooks]:
    """The trackers ``cfg.train.loggers`` names, opened for this run (rank 0 only)."""
    made = []
    for name in cfg.train.loggers:
        try:
            if name == "tensorboard":
                made.append(TensorBoard(run, start_step))
            else:
                made.append({"mlflow": MLflow, "wandb": WandB}[name](cfg, run, start_step > 0))
        except ImportError as e:
            raise UserError(f"train.loggers={name} needs {e.name or name}: pip install 'scalelab[track]'") from None
    return made
