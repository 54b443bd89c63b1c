"""Crash-safe search results: one SQLite row per architecture, committed as it finishes.

The database (``results.sqlite`` in a search directory) has two tables:

- ``meta(key, value)``: what the scores depend on (space, seed, GTN run and outer step, sizes,
  steps, ...), written by the first process and checked by every later one, so rows computed
  under different settings never mix;
- ``results``: one row per architecture index ``idx`` (PRIMARY KEY: architecture i is
  ``fold_in(search_key, i)``) with its genotype string, parameter count, FLOPs (the ``params`` and
  ``flops`` proxies), and per other proxy ``<proxy>_score``, ``<proxy>_train_s`` (the seconds
  it took: training and scoring, or a zero-cost pass) and ``<proxy>_compile_s``. A database
  written before a proxy existed gets its columns added when opened.

Writes are upserts keyed by ``idx`` in one transaction each: a rerun, or a second process that
scored the same index, never duplicates a row, and a proxy added later fills in its columns
without touching the others. The journal is in WAL mode with a busy timeout, so several
processes (issue #6) can share one file; a killed process loses at most the row it was computing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from gtn_nas.config import SEARCH_PROXIES
from gtn_nas.errors import CheckpointError, ConfigError

SCHEMA_VERSION = 1
PROXIES = SEARCH_PROXIES
COLUMN_PROXIES = ("params", "flops")  # scores that are columns of their own
DEGENERATE = -1e30  # a zero-cost score where the proxy is undefined (below every finite score)
Row = dict[str, Any]

_BASE_COLUMNS = (
    ("idx", "INTEGER PRIMARY KEY"),
    ("genotype", "TEXT NOT NULL"),
    ("space", "TEXT NOT NULL"),
    ("params", "INTEGER NOT NULL"),
    ("flops", "REAL"),
)
SCORED_PROXIES = tuple(p for p in PROXIES if p not in COLUMN_PROXIES)
_PROXY_COLUMNS = tuple((f"{p}_{kind}", "REAL") for p in SCORED_PROXIES
                       for kind in ("score", "train_s", "compile_s"))
_TAIL_COLUMNS = (("seconds", "REAL"), ("worker", "TEXT"), ("finished_at", "REAL"))
COLUMNS = tuple(c for c, _ in _BASE_COLUMNS + _PROXY_COLUMNS + _TAIL_COLUMNS)


def score_column(proxy: str) -> str:
    """The column holding a proxy's score (``params`` and ``flops`` are columns of their own)."""
    if proxy not in PROXIES:
        raise ConfigError(f"unknown proxy {proxy!r}; choose from {', '.join(PROXIES)}")
    return proxy if proxy in COLUMN_PROXIES else f"{proxy}_score"


class Store:
    """A search's results database. Open it with ``Store(path)``; close with ``close()``."""

    def __init__(self, path: str | Path, timeout: float = 60.0):
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            cols = ", ".join(f"{c} {t}" for c, t in _BASE_COLUMNS + _PROXY_COLUMNS + _TAIL_COLUMNS)
            with self._transaction():
                self._db.execute("CREATE TABLE IF NOT EXISTS meta "
                                 "(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                self._db.execute(f"CREATE TABLE IF NOT EXISTS results ({cols})")
                have = {r[1] for r in self._db.execute("PRAGMA table_info(results)")}
                for c, t in _PROXY_COLUMNS:  # proxies added since the database was written
                    if c not in have:
                        self._db.execute(f"ALTER TABLE results ADD COLUMN {c} {t}")
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                                 (json.dumps(SCHEMA_VERSION),))
            version = self.get_meta("schema_version")
        except sqlite3.DatabaseError as e:
            raise CheckpointError(f"{self.path} is not a readable results database ({e}); "
                                  "use a new --out directory") from None
        if version != SCHEMA_VERSION:
            raise CheckpointError(f"{self.path} has results schema {version}, this gtn-nas "
                                  f"writes {SCHEMA_VERSION}; use a new --out directory")

    def _transaction(self):
        db = self._db

        class _Tx:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")  # take the write lock up front: no upgrade deadlock

            def __exit__(self, exc_type, exc, tb):
                db.execute("ROLLBACK" if exc_type else "COMMIT")
                return False

        return _Tx()

    # ------------------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row["value"])

    def bind(self, identity: Mapping[str, Any]) -> None:
        """Records ``identity`` on first use; afterwards raises if any value differs."""
        with self._transaction():
            for k, v in identity.items():
                self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                                 (f"id.{k}", json.dumps(v, sort_keys=True)))
            stored = {r["key"][3:]: json.loads(r["value"]) for r in
                      self._db.execute("SELECT key, value FROM meta WHERE key LIKE 'id.%'")}
        norm = json.loads(json.dumps(dict(identity), sort_keys=True))
        diff = [k for k in norm if stored.get(k) != norm[k]]
        if diff:
            shown = ", ".join(f"{k}: {stored.get(k)!r} -> {norm[k]!r}" for k in diff[:4])
            raise ConfigError(f"{self.path} holds results computed with other settings ({shown}); "
                              "use a new --out directory or the original settings")

    # ------------------------------------------------------------------------------ rows

    def put(self, row: Mapping[str, Any]) -> None:
        """Inserts or completes the row of ``row['idx']`` in one committed transaction.

        Columns given as None keep their stored value, so a rerun that adds a proxy fills in only
        its own columns.
        """
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown result columns: {sorted(unknown)}")
        values = {c: row.get(c) for c in COLUMNS}
        values.setdefault("finished_at", None)
        if values["finished_at"] is None:
            values["finished_at"] = time.time()
        names = ", ".join(COLUMNS)
        marks = ", ".join(f":{c}" for c in COLUMNS)
        updates = ", ".join(f"{c} = COALESCE(excluded.{c}, results.{c})"
                            for c in COLUMNS if c != "idx")
        with self._transaction():
            self._db.execute(f"INSERT INTO results ({names}) VALUES ({marks}) "
                             f"ON CONFLICT(idx) DO UPDATE SET {updates}", values)

    def rows(self, indices: Iterable[int] | None = None) -> list[Row]:
        """All rows (or those of ``indices``), ordered by index."""
        rows = [dict(r) for r in self._db.execute("SELECT * FROM results ORDER BY idx")]
        if indices is not None:
            wanted = set(indices)
            rows = [r for r in rows if r["idx"] in wanted]
        return rows

    def done(self, proxies: Sequence[str]) -> set[int]:
        """Indices whose row holds a score for every proxy in ``proxies``."""
        cond = " AND ".join(f"{score_column(p)} IS NOT NULL" for p in proxies) or "1"
        return {r[0] for r in self._db.execute(f"SELECT idx FROM results WHERE {cond}")}

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["COLUMNS", "COLUMN_PROXIES", "DEGENERATE", "PROXIES", "SCORED_PROXIES", "Store", "score_column"]
