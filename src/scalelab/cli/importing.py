"""`scalelab ladder import PATH... --out LADDER`: a ladder trained anywhere, as a scalelab ladder store."""

from __future__ import annotations

from scalelab.cli.args import positive
from scalelab.cli.output import print_json, table


def cmd_import(a) -> int:
    from scalelab.ladder.ingest import ImportOptions, import_ladder
    from scalelab.ladder.sources.readers import parse_map

    opts = ImportOptions(tokens_per_step=a.tokens_per_step, loss_key=a.loss_key, params=a.params)
    rows = import_ladder(a.paths, a.out, opts, source=a.source, mapping=parse_map(a.map))
    if a.json:
        print_json(rows)
        return 0
    table(f"imported {len(rows)} runs into {a.out}", ["run", "source", "N", "tokens", "points", "loss key",
                                                      "final loss"],
          [(r["run"], r["source"], f"{r['N']:,}", f"{r['tokens']:.4g}", r["points"], r["loss_key"],
            f"{r['final_loss']:.4f}") for r in rows])
    print(f"next: scalelab ladder export {a.out} --out runs.csv && scalelab fit runs.csv   "
          f"(curves: scalelab ladder export {a.out} --curves --out curves.csv && scalelab fit curves.csv --curves)")
    return 0


def register(ls) -> None:
    i = ls.add_parser("import", help="a ladder trained anywhere (TensorBoard, MLflow, W&B, HF Trainer, CSV logs) as a "
                                     "scalelab ladder", description=(
        "Each PATH is one run's folder (a Hugging Face Trainer output folder, a folder of TensorBoard event files, "
        "a W&B offline run folder), a folder of run folders, an MLflow store (a .db file, a folder holding "
        "mlflow.db, or a tracking URI), a CSV/JSONL log, or wandb:ENTITY/PROJECT (with a network). A run's N "
        "comes from the config.json beside its logs (exact counts, as `scalelab count`) or --params."))
    i.add_argument("paths", nargs="+", metavar="PATH", help="run folders, folders of runs, MLflow stores or URIs, logs")
    i.add_argument("--out", required=True, help="the new ladder folder (must not exist, or be empty)")
    i.add_argument("--tokens-per-step", type=positive, default=None,
                   help="training tokens per optimizer step, where the logs carry no token count")
    i.add_argument("--loss-key", default=None,
                   help="the logged loss to fit (default: the first validation loss found, e.g. eval/loss, "
                        "eval_loss, val_loss; else the training loss)")
    i.add_argument("--params", type=positive, default=None, help="N for every run, where no config gives it")
    i.add_argument("--source", default=None, choices=("hf", "tensorboard", "wandb", "mlflow", "table"),
                   help="the kind of every PATH (default: found from what it holds)")
    i.add_argument("--map", default=None, metavar="OURS=THEIRS,...",
                   help="CSV/JSONL logs: which columns are step, loss, lr, tokens, run, N (e.g. step=iter,"
                        "loss=train/loss)")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=cmd_import)
