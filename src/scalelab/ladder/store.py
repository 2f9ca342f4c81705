"""The ladder's embedded SQLite store: every run's spec, status, final and intermediate metrics.

WAL journal (readers never block the writer), every change in a transaction, a busy timeout so
parallel runs can write. A run is `done` only once its final metrics are committed together with
the status, so a crash can never leave a run half-recorded or recorded twice.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from scalelab.errors import UserError
from scalelab.io import process_alive
from scalelab.train.records import FIELDS, MetricsRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,              -- the planned rung (JSON)
    status TEXT NOT NULL DEFAULT 'pending',   -- pending | running | done | failed
    budget REAL, N INTEGER, N_non_embedding INTEGER, D INTEGER, C REAL, steps INTEGER,
    final_loss REAL, final_bpb REAL, flops_exact REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at REAL, finished_at REAL, wall_seconds REAL,
    run_dir TEXT, error TEXT
);
CREATE TABLE IF NOT EXISTS points (   -- one MetricsRecord per row (train/records.py)
    run TEXT NOT NULL REFERENCES runs(name),
    step INTEGER NOT NULL, tokens INTEGER, flops REAL, lr REAL,
    train_loss REAL, val_loss REAL, val_bpb REAL, tokens_per_s REAL,
    PRIMARY KEY (run, step)
);
CREATE TABLE IF NOT EXISTS task_points (   -- a record's task metrics (MetricsRecord.tasks), one value per row
    run TEXT NOT NULL, step INTEGER NOT NULL, task TEXT NOT NULL, metric TEXT NOT NULL, value REAL,
    PRIMARY KEY (run, step, task, metric)
);
CREATE TABLE IF NOT EXISTS claims (   -- `ladder run --share`: which process trains which unit of work
    unit TEXT PRIMARY KEY, owner TEXT NOT NULL, host TEXT, pid INTEGER, heartbeat REAL
);
"""
# a claim whose holder has written nothing for this long is taken over (its process is presumed gone);
# on the holder's own machine a dead pid frees it at once
STALE_SECONDS = 600.0
# columns added since the first schema: stores written by older versions gain them on open
POINT_COLUMNS = {"grad_norm": "REAL", "mfu": "REAL", "lb_loss": "REAL", "z_loss": "REAL", "dropped_frac": "REAL",
                 "expert_load": "TEXT"}


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute("PRAGMA busy_timeout=60000")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self._create()
        except sqlite3.DatabaseError as e:  # not a database, or a damaged one
            self.conn.close()
            raise UserError(f"{self.path} is not a readable ladder store ({e}); restore it from a copy, or "
                            "re-run the ladder into a new --out (finished runs' directories are kept)") from None

    def _create(self) -> None:
        """Tables, and the columns added since the first schema, in one transaction: processes opening
        a new store at once (`ladder run --share`) must not both add a column."""
        with self.tx() as c:
            for stmt in filter(str.strip, SCHEMA.split(";")):
                c.execute(stmt)
            have = {r["name"] for r in c.execute("PRAGMA table_info(points)")}
            for col, kind in POINT_COLUMNS.items():
                if col not in have:
                    c.execute(f"ALTER TABLE points ADD COLUMN {col} {kind}")

    @contextmanager
    def tx(self):
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # SQLite has already rolled back after some errors (a full disk)
                self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()

    # ---- meta ------------------------------------------------------------------------------
    def set_meta(self, key: str, value) -> None:
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    # ---- runs ------------------------------------------------------------------------------
    def add_planned(self, rungs) -> None:
        """Register planned rungs; existing rows (and their status) are left untouched."""
        with self.tx() as c:
            for r in rungs:
                c.execute("INSERT OR IGNORE INTO runs (name, spec, budget, N, N_non_embedding, D, C, steps) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (r.name, json.dumps(r.record()), r.budget, r.N, r.N_non_embedding, r.D, r.C, r.steps))

    def mark_running(self, name: str, run_dir: str) -> None:
        with self.tx() as c:
            c.execute("UPDATE runs SET status='running', attempts=attempts+1, started_at=COALESCE(started_at, ?), "
                      "run_dir=?, error=NULL WHERE name=?", (time.time(), run_dir, name))

    def mark_done(self, name: str, final: dict, flops_exact: float, wall_seconds: float) -> None:
        """``final``: the run's last record as a dict (summary.json's "final")."""
        with self.tx() as c:
            c.execute("UPDATE runs SET status='done', final_loss=?, final_bpb=?, flops_exact=?, finished_at=?, "
                      "wall_seconds=? WHERE name=?",
                      (final.get("val_loss"), final.get("val_bpb"), flops_exact, time.time(), wall_seconds, name))

    def mark_failed(self, name: str, error: str) -> None:
        with self.tx() as c:
            c.execute("UPDATE runs SET status='failed', error=? WHERE name=?", (error[:2000], name))

    def add_point(self, name: str, rec: MetricsRecord) -> None:
        self.add_points(name, [rec])

    def add_points(self, name: str, recs: list[MetricsRecord]) -> None:
        """Several records of one run in one transaction."""
        with self.tx() as c:
            for rec in recs:
                self._insert_point(c, name, rec)

    @staticmethod
    def _insert_point(c, name: str, rec: MetricsRecord) -> None:
        row = rec.to_dict()
        tasks = row.pop("tasks", {})
        if "expert_load" in row:
            row["expert_load"] = json.dumps(row["expert_load"])
        cols = ", ".join(["run", *row])
        c.execute(f"INSERT OR REPLACE INTO points ({cols}) VALUES ({', '.join('?' * (len(row) + 1))})",
                  (name, *row.values()))
        c.executemany("INSERT OR REPLACE INTO task_points VALUES (?, ?, ?, ?, ?)",
                      [(name, rec.step, task, k, v) for task, m in tasks.items() for k, v in m.items()])

    def runs(self, status: str | None = None) -> list[dict]:
        q = "SELECT * FROM runs" + (" WHERE status = ?" if status else "") + " ORDER BY budget, N"
        return [dict(r) for r in self.conn.execute(q, (status,) if status else ())]

    def records(self, name: str | None = None) -> list[tuple[str, MetricsRecord]]:
        """(run name, record) for every stored point, in (run, step) order."""
        where, args = (" WHERE run = ?", (name,)) if name else ("", ())
        tasks: dict[tuple[str, int], dict] = {}
        for r in self.conn.execute("SELECT * FROM task_points" + where, args):
            tasks.setdefault((r["run"], r["step"]), {}).setdefault(r["task"], {})[r["metric"]] = r["value"]
        out = []
        for r in self.conn.execute("SELECT * FROM points" + where + " ORDER BY run, step", args):
            d = {k: r[k] for k in r.keys() if k in FIELDS}
            if d.get("expert_load"):
                d["expert_load"] = json.loads(d["expert_load"])
            out.append((r["run"], MetricsRecord.from_dict({**d, "tasks": tasks.get((r["run"], r["step"]))})))
        return out

    def progress(self) -> dict[str, int]:
        """Latest recorded step per run."""
        return {r["run"]: r["s"] for r in self.conn.execute("SELECT run, MAX(step) AS s FROM points GROUP BY run")}

    # ---- claims: several `ladder run --share` processes (or machines) split one ladder ----------
    def claim(self, unit: str, owner: str, stale_s: float = STALE_SECONDS) -> dict | None:
        """Take ``unit`` for ``owner`` (this process) unless a live holder has it; returns None when
        taken, else the holder's row. One transaction, so two claimants can never both win."""
        with self.tx() as c:
            row = c.execute("SELECT * FROM claims WHERE unit = ?", (unit,)).fetchone()
            if row is not None and row["owner"] != owner and not _stale(dict(row), stale_s):
                return dict(row)
            c.execute("INSERT OR REPLACE INTO claims (unit, owner, host, pid, heartbeat) VALUES (?, ?, ?, ?, ?)",
                      (unit, owner, socket.gethostname(), os.getpid(), time.time()))
        return None

    def heartbeat(self, unit: str, owner: str) -> None:
        with self.tx() as c:
            c.execute("UPDATE claims SET heartbeat = ? WHERE unit = ? AND owner = ?", (time.time(), unit, owner))

    def release(self, unit: str, owner: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM claims WHERE unit = ? AND owner = ?", (unit, owner))

    def claims(self) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM claims ORDER BY unit")]


def _stale(row: dict, stale_s: float) -> bool:
    """A holder that has not written for ``stale_s`` seconds, or whose process on this machine is gone."""
    if time.time() - (row["heartbeat"] or 0.0) > stale_s:
        return True
    return row["host"] == socket.gethostname() and not process_alive(int(row["pid"]))
