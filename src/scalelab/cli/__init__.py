"""`scalelab`: one entry point, one module per command group, no domain logic here.

    run.py        train, sample, count, export
    ladder.py     ladder plan|run|status|export|suggest, report, demo (importing.py: ladder import)
    laws.py       fit, predict, backtest (curves.py, mixture.py, task_laws.py, allocation.py: their variants)
    econ.py       plan, models (mixture.py: plan --mixture)
    labs.py       lab
    tasks.py      tasks show|write
    evaluate.py   eval (lm-evaluation-harness)
    data.py       data list|fetch|path (public datasets, fetched on first use)

Every user error ends with one line on stderr and exit code 2 (a diverged run: exit code 3). Library
errors name their argument (``UserError.arg``); `main` rewrites it as the flag that sets it.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import sqlite3
import sys

from scalelab.errors import Diverged, UserError
from scalelab.io import WriteError

# Before numpy is imported (commands import it lazily): the law fits are many small array operations, on
# which OpenBLAS's thread pool only spins (same wall time, half the CPU; 2 processes on 2 cores ran the
# back-test 5x slower). torch uses MKL and its own threads. A user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def build_parser() -> argparse.ArgumentParser:
    from scalelab import __version__
    from scalelab.cli import data, econ, evaluate, labs, ladder, laws, run, tasks
    from scalelab.cli.args import Parser

    p = Parser(prog="scalelab", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"scalelab {__version__}")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="a local mirror of public data laid out as OWNER/REPO/COMMIT/PATH, read instead of the "
                        "network (same as $SCALELAB_DATA_DIR)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, laws, ladder, econ, labs, tasks, evaluate, data):
        module.register(sub)
    helps = {a.dest: a.help for a in sub._choices_actions}
    _describe(p)
    p.description = command_map(helps)
    sub._choices_actions.clear()  # the map above replaces argparse's flat list
    return p


def _describe(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command's own --help starts with what it does: its help line, where it has no description."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sp in action.choices.items():
                sp.description = sp.description or helps.get(name)
                _describe(sp)


# `scalelab --help` and bare `scalelab`: the commands by workflow
GROUPS = (("plan and size", ("count", "plan", "models")),
          ("run a ladder", ("ladder", "demo", "train", "sample", "report")),
          ("fit and forecast", ("fit", "predict", "backtest")),
          ("labs", ("lab", "tasks")),
          ("interop and data", ("export", "eval", "data")))
START = ("start here: `scalelab fit --example chinchilla` fits a published ladder (seconds, no training); "
         "`scalelab demo` trains one and forecasts a 4x bigger run (~5 min); `scalelab COMMAND --help` for any "
         "command")


def command_map(helps: dict[str, str]) -> str:
    import textwrap

    lines = ["A laboratory for language-model scaling: estimate how good a model will be before you train it.", "",
             *textwrap.wrap(START, 100), ""]
    listed = set()
    for title, names in GROUPS:
        lines.append(f"{title}:")
        for n in names:
            first, *rest = textwrap.wrap(helps[n], 78)
            lines += [f"  {n:10s}{first}", *[" " * 12 + r for r in rest]]
            listed.add(n)
        lines.append("")
    missing = sorted(set(helps) - listed)
    if missing:
        raise RuntimeError(f"commands missing from the command map: {missing}")
    return "\n".join(lines)


def flag_for(parser: argparse.ArgumentParser, command: str | None, arg: str) -> str | None:
    """The option string of the chosen command that sets ``arg`` (argparse ``dest``), if any."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            sub = action.choices[command]
            for a in sub._actions:
                if a.dest == arg and a.option_strings:
                    return max(a.option_strings, key=len)
                if isinstance(a, argparse._SubParsersAction):  # e.g. `ladder export --out`
                    for inner in a.choices.values():
                        hit = flag_for_actions(inner, arg)
                        if hit:
                            return hit
            return sub.get_default("setting_flag") and f"{sub.get_default('setting_flag')} {arg}"
    return None


def flag_for_actions(parser: argparse.ArgumentParser, arg: str) -> str | None:
    for a in parser._actions:
        if a.dest == arg and a.option_strings:
            return max(a.option_strings, key=len)
    return None


def message(parser: argparse.ArgumentParser, command: str | None, e: UserError) -> str:
    text = str(e)
    flag = flag_for(parser, command, e.arg) if e.arg else None
    return text.replace(e.arg, flag, 1) if flag else text


def non_finite(parser: argparse.ArgumentParser, args: argparse.Namespace) -> UserError | None:
    """NaN or infinity given to any numeric flag (argparse's float accepts 'nan' and 'inf')."""
    for k, v in vars(args).items():
        if isinstance(v, float) and not math.isfinite(v):
            return UserError(f"{k} must be a finite number, got {v}", arg=k)
    return None


WRITE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                errno.EACCES: "permission denied", errno.EROFS: "the file system is read-only",
                errno.EPERM: "operation not permitted"}
SQLITE_WRITE = ("disk is full", "readonly database", "unable to open database file", "disk I/O error")


def write_fault(e: Exception) -> str | None:
    """A disk that is full or a path that cannot be written, as one line naming the path; None for
    any other error. Runs keep their last good checkpoint and ladders their finished rungs, so the
    same command continues once the fault is fixed."""
    if isinstance(e, OSError) and (e.errno in WRITE_ERRNOS or isinstance(e, WriteError)):
        where = e.filename or "a file"
        what = WRITE_ERRNOS.get(e.errno, e.strerror)
    elif isinstance(e, sqlite3.OperationalError) and any(m in str(e) for m in SQLITE_WRITE):
        where, what = "the ladder store (ladder.sqlite)", str(e)
    else:
        return None
    return (f"cannot write {where}: {what}; free space or choose another --out, then run the same "
            "command again (finished runs and the last good checkpoint are kept)")


# a module a command needs -> the extra that installs it (the core fits and plans without them)
EXTRA_OF = {"torch": "train", "tokenizers": "train", "safetensors": "train", "matplotlib": "report",
            "plotly": "report", "transformers": "hf", "datasets": "hf", "ray": "ray", "torchao": "labs",
            "lm_eval": "eval", "tensorboard": "track", "mlflow": "track"}


def missing_extra(e: ModuleNotFoundError) -> str | None:
    """One line naming the extra to install, for a module that only an extra brings; else None."""
    top = (e.name or "").split(".")[0]
    if top not in EXTRA_OF:
        return None
    return (f"this command needs {top}, which the core install leaves out: pip install 'scalelab[{EXTRA_OF[top]}]' "
            "(or 'scalelab[all]')")


def _quiet_stdout() -> None:
    """The reader of our stdout went away (`scalelab ... | head`): send the rest nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # bare `scalelab`: the map, not an error
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    try:
        bad = non_finite(parser, args)
        if bad:
            raise bad
        if args.data_dir:  # read by scalelab.datasets, in this process and in any it starts
            os.environ["SCALELAB_DATA_DIR"] = args.data_dir
        code = args.fn(args) or 0
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return 141  # as if killed by SIGPIPE, like any Unix tool in a pipe
    except UserError as e:
        print(f"scalelab: error: {message(parser, args.command, e)}", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"scalelab: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("scalelab: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:
        line = missing_extra(e)
        if line is None:
            raise
        print(f"scalelab: error: {line}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.OperationalError) as e:
        line = write_fault(e)
        if line is None:
            raise
        print(f"scalelab: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
