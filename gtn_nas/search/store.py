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

- ``evaluations``: one row per (genotype, proxy, fidelity) (``search.stages.Fidelity.key``: steps
  and sizes), every score any strategy or cascade stage asked for, so a genotype proposed twice,
  or re-scored by a later stage at a fidelity it already has, is scored once.

Writes are upserts keyed by ``idx`` in one transaction each: a rerun, or a second process that
scored the same index, never duplicates a row, and a proxy added later fills in its columns
without touching the others. The journal is in WAL mode with a busy timeout, so several
processes (issue #6) can share one file; a killed process loses at most the row it was computing.

Every SQLite failure becomes one error that says what happened (``_db_errors``): a lock held
past the timeout by another process, a read-only file, a full disk, a damaged file; and rows
are checked for the types their readers rely on, so an edited database is refused, not ranked.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from gtn_nas.config import SEARCH_PROXIES, VOTE
from gtn_nas.errors import CheckpointError, ConfigError, GtnError
from gtn_nas.io.files import OutputError
from gtn_nas.search.zero_cost import DEGENERATE

SCHEMA_VERSION = 1
PROXIES = SEARCH_PROXIES  # every proxy with a score column (``vote``'s is computed, not stored)
COLUMN_PROXIES = ("params", "flops")  # scores that are columns of their own
Row = dict[str, Any]

_BASE_COLUMNS = (
    ("idx", "INTEGER PRIMARY KEY"),
    ("genotype", "TEXT NOT NULL"),
    ("space", "TEXT NOT NULL"),
    ("params", "INTEGER NOT NULL"),
    ("flops", "REAL"),
)
SCORED_PROXIES = tuple(p for p in PROXIES if p not in COLUMN_PROXIES)
STORED_PROXIES = tuple(p for p in SCORED_PROXIES if p != VOTE)
_PROXY_COLUMNS = tuple((f"{p}_{kind}", "REAL") for p in STORED_PROXIES
                       for kind in ("score", "train_s", "compile_s"))
_TAIL_COLUMNS = (("seconds", "REAL"), ("worker", "TEXT"), ("finished_at", "REAL"))
COLUMNS = tuple(c for c, _ in _BASE_COLUMNS + _PROXY_COLUMNS + _TAIL_COLUMNS)
_TEXT_COLUMNS = ("genotype", "space", "worker")
_NULLABLE = frozenset(c for c in COLUMNS if c not in ("idx", "genotype", "space", "params"))


def _db_error(e: sqlite3.Error, path: Path, timeout: float) -> GtnError:
    """One error for a failed SQLite call, by what the user can do about it."""
    text = str(e).lower()
    if "locked" in text or "busy" in text:
        return ConfigError(f"{path} is locked by another process (waited {timeout:g} s); run the "
                           "command again once the other search, or the program holding it, is "
                           "done")
    if "readonly" in text or "read-only" in text:
        return OutputError(f"{path} is read-only; copy the search folder somewhere writable to "
                           "score more architectures (rank and show read it as it is)")
    if "full" in text:
        return OutputError(f"cannot write {path}: the disk is full; free space and run the same "
                           "command again to resume (every finished row is kept)")
    if "unable to open" in text:
        return OutputError(f"cannot open {path} ({e})")
    return CheckpointError(f"{path} is not a readable results database ({e}); it is damaged: "
                           "use a new --out directory")


def score_column(proxy: str) -> str:
    """The column holding a proxy's score (``params`` and ``flops`` are columns of their own)."""
    if proxy not in PROXIES:
        raise ConfigError(f"unknown proxy {proxy!r}; choose from {', '.join(PROXIES)}")
    return proxy if proxy in COLUMN_PROXIES else f"{proxy}_score"


class Store:
    """A search's results database. Open it with ``Store(path)``; close with ``close()``."""

    def __init__(self, path: str | Path, timeout: float = 60.0, readonly: bool = False):
        """``readonly``: for readers (rank, show), which then work on a search in a read-only
        folder or file system, and never create a database where there is none."""
        self.path = Path(path)
        self.timeout = timeout
        with self._errors():
            if readonly:
                self._db = self._connect_readonly()
            else:
                self._db = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
                self._create()
            version = self.get_meta("schema_version")
        if version != SCHEMA_VERSION:
            raise CheckpointError(f"{self.path} has results schema {version}, this gtn-nas "
                                  f"writes {SCHEMA_VERSION}; use a new --out directory")

    def _create(self) -> None:
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        cols = ", ".join(f"{c} {t}" for c, t in _BASE_COLUMNS + _PROXY_COLUMNS + _TAIL_COLUMNS)
        with self._transaction():
            self._db.execute("CREATE TABLE IF NOT EXISTS meta "
                             "(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute(f"CREATE TABLE IF NOT EXISTS results ({cols})")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS evaluations (genotype TEXT NOT NULL, proxy TEXT NOT "
                "NULL, fidelity TEXT NOT NULL, score REAL NOT NULL, train_s REAL, compile_s REAL, "
                "idx INTEGER, finished_at REAL, PRIMARY KEY (genotype, proxy, fidelity))")
            have = {r[1] for r in self._db.execute("PRAGMA table_info(results)")}
            for c, t in _PROXY_COLUMNS:  # proxies added since the database was written
                if c not in have:
                    self._db.execute(f"ALTER TABLE results ADD COLUMN {c} {t}")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                             (json.dumps(SCHEMA_VERSION),))

    def _connect_readonly(self) -> sqlite3.Connection:
        """mode=ro; where even that needs a write (a WAL database in a read-only folder without
        its -shm file), immutable=1: nothing can be writing a read-only folder."""
        uri = self.path.resolve().as_uri()
        for query in ("mode=ro", "immutable=1"):
            db = sqlite3.connect(f"{uri}?{query}", uri=True, timeout=self.timeout,
                                 isolation_level=None)
            db.row_factory = sqlite3.Row
            try:
                db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                return db
            except sqlite3.OperationalError as e:
                db.close()
                if query == "immutable=1" or "no such table" in str(e):
                    raise
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            raise _db_error(e, self.path, self.timeout) from None

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
        with self._errors():
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        try:
            return None if row is None else json.loads(row["value"])
        except (TypeError, json.JSONDecodeError):
            raise CheckpointError(f"{self.path}: its setting {key!r} is not readable; the "
                                  "database is damaged: use a new --out directory") from None

    def set_meta(self, key: str, value: Any) -> None:
        """Records a setting that may change between invocations (not part of the identity)."""
        with self._errors(), self._transaction():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                             (key, json.dumps(value, sort_keys=True)))

    def bind(self, identity: Mapping[str, Any]) -> None:
        """Records ``identity`` on first use; afterwards raises if any value differs."""
        with self._errors(), self._transaction():
            for k, v in identity.items():
                self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                                 (f"id.{k}", json.dumps(v, sort_keys=True)))
            stored = {r["key"][3:]: r["value"] for r in
                      self._db.execute("SELECT key, value FROM meta WHERE key LIKE 'id.%'")}
        try:
            stored = {k: json.loads(v) for k, v in stored.items()}
        except (TypeError, json.JSONDecodeError):
            raise CheckpointError(f"{self.path}: its settings are not readable; the database is "
                                  "damaged: use a new --out directory") from None
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
        with self._errors(), self._transaction():
            self._db.execute(f"INSERT INTO results ({names}) VALUES ({marks}) "
                             f"ON CONFLICT(idx) DO UPDATE SET {updates}", values)

    def rows(self, indices: Iterable[int] | None = None) -> list[Row]:
        """All rows (or those of ``indices``), ordered by index, each of the types the readers
        rely on (an edited database with a text score is refused, not ranked)."""
        with self._errors():
            rows = [dict(r) for r in self._db.execute("SELECT * FROM results ORDER BY idx")]
        for r in rows:
            self._check_row(r)
        if indices is not None:
            wanted = set(indices)
            rows = [r for r in rows if r["idx"] in wanted]
        return rows

    def _check_row(self, r: Row) -> None:
        for c, v in r.items():
            if v is None and c in _NULLABLE:
                continue
            if c in _TEXT_COLUMNS:
                ok = isinstance(v, str)
            elif c in ("idx", "params"):
                ok = isinstance(v, int) and v >= 0
            else:
                ok = isinstance(v, (int, float))
            if not ok:
                raise CheckpointError(f"{self.path}: row {r.get('idx')!r:.20} holds {v!r:.40} in "
                                      f"{c}; the database is damaged or was edited")

    def done(self, proxies: Sequence[str]) -> set[int]:
        """Indices whose row holds a score for every proxy in ``proxies``."""
        cond = " AND ".join(f"{score_column(p)} IS NOT NULL" for p in proxies) or "1"
        with self._errors():
            return {r[0] for r in self._db.execute(f"SELECT idx FROM results WHERE {cond}")}

    # ------------------------------------------------------------------------- evaluations

    def put_evaluations(self, genotype: str, fidelity: str, idx: int,
                        scores: Mapping[str, tuple[float, float | None, float | None]]) -> None:
        """Stores ``proxy -> (score, train_s, compile_s)`` of one genotype at ``fidelity``, in one
        transaction (a stage's evaluation is stored whole or not at all)."""
        now = time.time()
        with self._errors(), self._transaction():
            for proxy, (score, train_s, compile_s) in scores.items():
                self._db.execute("INSERT OR REPLACE INTO evaluations VALUES (?,?,?,?,?,?,?,?)",
                                 (genotype, proxy, fidelity, float(score), train_s, compile_s,
                                  idx, now))

    def evaluations(self) -> dict[tuple[str, str, str], tuple[float, float, float]]:
        """(genotype, proxy, fidelity) -> (score, train seconds, compile seconds) of every stored
        evaluation."""
        with self._errors():
            rows = self._db.execute("SELECT genotype, proxy, fidelity, score, train_s, compile_s "
                                    "FROM evaluations").fetchall()
        out = {}
        for g, p, f, v, t, c in rows:
            if not all(isinstance(x, str) for x in (g, p, f)) or not isinstance(v, (int, float)):
                raise CheckpointError(f"{self.path}: an evaluation of {g!r:.40} holds {v!r:.40}; "
                                      "the database is damaged or was edited")
            out[(g, p, f)] = (float(v), float(t or 0.0), float(c or 0.0))
        return out

    def count(self) -> int:
        with self._errors():
            return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["COLUMNS", "COLUMN_PROXIES", "DEGENERATE", "PROXIES", "SCORED_PROXIES", "Store", "score_column"]
