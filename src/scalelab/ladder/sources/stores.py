"""Readers of tracker stores: W&B runs (offline folders, or a project through wandb's API) and MLflow."""

from __future__ import annotations

import json
import os
from pathlib import Path

from scalelab.errors import UserError
from scalelab.ladder.sources.readers import _add, find_config
from scalelab.ladder.sources.runlog import RunLog

BLOCK = 32768  # a .wandb file is a LevelDB-format log of protobuf records, in 32 KiB blocks
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: Path):
    """The serialized `wandb_internal_pb2.Record`s of a .wandb file, in order: the file starts with ':W&B',
    a 2-byte magic and a version byte; then LevelDB log records (4-byte checksum, 2-byte length, 1-byte type)
    that never straddle a 32 KiB block, a record longer than what is left split in FIRST/MIDDLE/LAST pieces."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise UserError(f"{path} is not a W&B run log (no :W&B header)")
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            buf = chunk
        elif kind == MIDDLE:
            buf += chunk
        elif kind == LAST:
            yield buf + chunk
        else:  # zeros: the unwritten end of a preallocated block
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0


def _item_key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def _wandb_file(d: Path) -> Path:
    files = sorted(d.glob("*.wandb")) or sorted(d.glob("wandb/*run-*/*.wandb"), key=os.path.getmtime)
    if not files:
        raise UserError(f"{d}: no .wandb run log")
    return files[-1]


def read_wandb(path: str) -> list[RunLog]:
    """An offline (or synced) run folder; a project path ENTITY/PROJECT with a network (``wandb:`` prefix)."""
    if path.startswith("wandb:"):
        return read_wandb_api(path[len("wandb:"):])
    from wandb.proto import wandb_internal_pb2 as pb

    d = Path(path)
    log = _wandb_file(d)
    series: dict = {}
    config: dict = {}
    name = log.parent.name
    for raw in wandb_records(log):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            step = rec.history.step.num
            for item in rec.history.item:
                if _item_key(item) != "_step":
                    _add(series, _item_key(item), step, json.loads(item.value_json))
        elif kind in ("config", "run"):
            items = rec.config.update if kind == "config" else rec.run.config.update
            config.update({_item_key(i): json.loads(i.value_json) for i in items})
            if kind == "run" and rec.run.display_name:
                name = rec.run.display_name
    config.pop("_wandb", None)
    return [RunLog(name, "wandb", str(d), series, _model_config(config) or find_config(d), _flat(config))]


def read_wandb_api(project: str) -> list[RunLog]:
    import wandb

    try:
        runs = wandb.Api().runs(project)
    except Exception as e:  # noqa: BLE001  (network, auth, a wrong path: wandb raises many kinds)
        raise UserError(f"wandb:{project}: {str(e).splitlines()[0]}") from None
    out = []
    for r in runs:
        series: dict = {}
        for row in r.scan_history():
            for k, v in row.items():
                if not k.startswith("_"):
                    _add(series, k, row.get("_step", 0), v)
        cfg = {k: v for k, v in r.config.items() if not k.startswith("_")}
        out.append(RunLog(r.name, "wandb", f"wandb:{project}/{r.id}", series, _model_config(cfg), _flat(cfg)))
    return out


def _model_config(cfg: dict) -> dict | None:
    """The model config inside a tracker's run config: a scalelab run config (it has a model section) or a
    Hugging Face one (the Trainer's integrations log the model config's keys at the top level)."""
    if isinstance(cfg.get("model"), dict) and "d_model" in cfg["model"]:
        return cfg
    if "model_type" in cfg:
        return cfg
    return None


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _unflat(params: dict) -> dict:
    out: dict = {}
    for k, v in params.items():
        *head, last = k.split(".")
        node = out
        for h in head:
            node = node.setdefault(h, {})
        try:
            node[last] = json.loads(v) if isinstance(v, str) else v
        except json.JSONDecodeError:
            node[last] = v
    return out


def _mlflow_uri(path: str) -> str:
    if "://" in path:
        return path
    p = Path(path).resolve()
    if p.is_dir() and (p / "mlflow.db").exists():
        p = p / "mlflow.db"
    if p.is_file():
        return f"sqlite:///{p}"
    return p.as_uri()  # an mlruns folder (MLflow's file store)


def _logged_config(client, run_id: str) -> dict | None:
    """A config.json the run logged as an artifact (scalelab's MLflow logger does), if any."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bar per run
    try:
        names = {a.path for a in client.list_artifacts(run_id)}
        if "config.json" not in names:
            return None
        return _model_config(json.loads(Path(client.download_artifacts(run_id, "config.json")).read_text()))
    except Exception:  # noqa: BLE001  (an unreachable artifact store: fall back to the parameters)
        return None


def read_mlflow(path: str) -> list[RunLog]:
    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    client = MlflowClient(tracking_uri=_mlflow_uri(path))
    out = []
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], max_results=50_000):
            series: dict = {}
            for key in run.data.metrics:
                for m in client.get_metric_history(run.info.run_id, key):
                    _add(series, key, m.step, m.value)
            params = dict(run.data.params)
            cfg = _logged_config(client, run.info.run_id) or _model_config(_unflat(params)) or _model_config(params)
            name = run.info.run_name or run.info.run_id
            out.append(RunLog(name, "mlflow", f"{path}#{run.info.run_id}", series, cfg, params))
    if not out:
        raise UserError(f"{path}: the MLflow store holds no runs")
    return out
