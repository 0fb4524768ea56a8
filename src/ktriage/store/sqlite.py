"""SQLite store: WAL mode, one writer, batched inserts, readers alongside.

An existing database is opened and migrated, never dropped or overwritten; a
path that exists but is not a SQLite database is refused untouched.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ktriage.errors import StoreError
from ktriage.store import schema

log = logging.getLogger(__name__)
_MAGIC = b"SQLite format 3\0"


def check_writable_path(path: Path) -> None:
    """Raise StoreError (one line, naming the path) unless path can hold a database."""
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a database file")
    if path.exists():
        with open(path, "rb") as f:
            head = f.read(len(_MAGIC))
        if head and head != _MAGIC:
            raise StoreError(f"{path} exists and is not a SQLite database: refusing to touch it")
        if not os.access(path, os.W_OK):
            raise StoreError(f"{path} is not writable")
        return
    parent = path.parent
    if not parent.is_dir():
        raise StoreError(f"cannot create {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"cannot create {path}: directory {parent} is not writable")


def fit_int64(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Unsigned 64-bit values above SQLite's INTEGER range are stored as their
    two's-complement signed value (the same 64 bits)."""
    return tuple(v - (1 << 64) if isinstance(v, int) and v >= 1 << 63 else v for v in row)


class SqliteStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        check_writable_path(self.path)
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        self._columns = {t: [c for c, _ in cols] for t, cols in schema.event_tables().items()}
        self._plans: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}

    def _migrate(self) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in schema.BOOKKEEPING:
                db.execute(schema.bookkeeping_sql(table))
            self._add_bookkeeping_columns()
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            found = int(row[0]) if row else 0
            if found > schema.SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema version {found} is newer than this ktriage supports "
                                 f"({schema.SCHEMA_VERSION})")
            for table, cols in schema.event_tables().items():
                self._migrate_table(table, cols)
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                       (str(schema.SCHEMA_VERSION),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _add_bookkeeping_columns(self) -> None:
        for table, cols in schema.BOOKKEEPING_ADDED.items():
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for name, sqltype in cols:
                if name not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sqltype}")

    def _migrate_table(self, table: str, cols: list[tuple[str, str]]) -> None:
        self.db.execute(schema.create_table_sql(table, cols))
        have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
        for name, sqltype in cols:
            if name not in have:
                log.info("migrating %s: adding column %s.%s", self.path, table, name)
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sqltype}")
        for index in schema.INDEXES.get(table, ()):
            self.db.execute(schema.index_sql(table, index))
        self.db.execute(schema.unique_sql(table))

    def insert(self, events: Iterable[dict[str, Any]]) -> int:
        """Insert a batch in one transaction (an event already stored is skipped); returns the rows written."""
        by_plan: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]] = defaultdict(list)
        plans = self._plans
        for ev in events:
            shape = (ev["family"], tuple(ev))
            plan = plans.get(shape) or self._plan(shape)
            by_plan[plan].append(tuple(map(ev.get, plan[1])))
        written = 0
        self.db.execute("BEGIN")
        try:
            for (table, cols), rows in by_plan.items():
                written += self._insert_rows(schema.insert_sql(table, list(cols)), rows)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return written

    def _plan(self, shape: tuple[str, tuple[str, ...]]) -> tuple[str, tuple[str, ...]]:
        """The table and the columns an event of this shape (family, its keys) fills. Binding only
        those, not the table's every column, halves the cost of a row: most events set few."""
        family, keys = shape
        present = set(keys)
        if len(self._plans) >= 4096:  # shapes are few; bounded all the same
            self._plans.clear()
        plan = self._plans[shape] = (family, tuple(c for c in self._columns[family] if c in present))
        return plan

    def _insert_rows(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        self.db.execute("SAVEPOINT batch")
        before = self.db.total_changes
        try:
            self.db.executemany(sql, rows)
        except OverflowError:  # rows before the offending one were inserted: undo, then refit all
            self.db.execute("ROLLBACK TO batch")
            before = self.db.total_changes
            self.db.executemany(sql, [fit_int64(row) for row in rows])
        self.db.execute("RELEASE batch")
        return self.db.total_changes - before

    def begin_run(self, host: str, source: str, kernel: str, version: str, command: str, probe: dict[str, Any]) -> int:
        cur = self.db.execute(
            "INSERT INTO runs (host, source, started, kernel, version, command, probe) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (host, source, time.time_ns(), kernel, version, command, json.dumps(probe)),
        )
        return int(cur.lastrowid or 0)

    def end_run(self, run_id: int, counters: list[tuple[str, str, str, int]]) -> None:
        """counters: (stage, family, counter, value) rows."""
        self.db.execute("BEGIN")
        self.db.execute("UPDATE runs SET ended = ? WHERE id = ?", (time.time_ns(), run_id))
        self.db.executemany("INSERT INTO stats (run_id, stage, family, counter, value) VALUES (?, ?, ?, ?, ?)",
                            [(run_id, *row) for row in counters])
        self.db.execute("COMMIT")

    def prune(self, before_ns: int) -> dict[str, int]:
        """Delete events older than before_ns (retention); returns rows deleted per table."""
        deleted = {}
        self.db.execute("BEGIN")
        for table in self._columns:
            deleted[table] = self.db.execute(f"DELETE FROM {table} WHERE ts < ?", (before_ns,)).rowcount
        self.db.execute("COMMIT")
        return deleted

    def ingested(self, sha256: str) -> bool:
        return self.db.execute("SELECT 1 FROM ingested WHERE sha256 = ?", (sha256,)).fetchone() is not None

    def mark_ingested(self, sha256: str, path: str, source: str, events: int, detections: int, errors: int,
                      unmapped: int) -> None:
        self.db.execute("INSERT INTO ingested (sha256, path, source, events, detections, errors, unmapped, ts) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (sha256, path, source, events, detections, errors, unmapped, time.time_ns()))

    # -- runs that may not have ended cleanly (detect/tamper.py, recovery.py, watchdog.py) ------------

    def set_run_process(self, run_id: int, pid: int, pid_start: int) -> None:
        self.db.execute("UPDATE runs SET pid = ?, pid_start = ? WHERE id = ?", (pid, pid_start, run_id))

    def open_runs(self, host: str) -> list[tuple[int, int | None, int | None, int]]:
        """(id, pid, pid_start, started) of this host's recordings that have no end."""
        return self.db.execute("SELECT id, pid, pid_start, started FROM runs WHERE host = ? AND source = 'ebpf' "
                               "AND ended IS NULL ORDER BY id", (host,)).fetchall()

    def end_run_abnormally(self, run_id: int, reason: str) -> bool:
        """Close a run its recorder could not close; False when it has an end already."""
        cur = self.db.execute("UPDATE runs SET ended = ?, end_reason = ? WHERE id = ? AND ended IS NULL",
                              (time.time_ns(), reason, run_id))
        return cur.rowcount == 1

    def close(self) -> None:
        self.db.close()


def open_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    p = Path(path)
    if not p.is_file():
        raise StoreError(f"{p}: no such database file")
    try:
        db = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
        db.execute("PRAGMA query_only=1")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{p}: {exc}") from exc
    return db
