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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from ktriage.errors import StoreError
from ktriage.store import schema, sqlguard
from ktriage.store.unknown import UnknownKeys

log = logging.getLogger(__name__)
_MAGIC = b"SQLite format 3\0"
BIND_ERRORS = (OverflowError, UnicodeEncodeError, sqlite3.ProgrammingError, sqlite3.InterfaceError)


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
    return tuple(v - (1 << 64) if isinstance(v, int) and 1 << 63 <= v < 1 << 64 else v for v in row)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("utf-8", "backslashreplace")
    elif isinstance(value, (int, float)):
        text = repr(value)
    else:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates kept as their escapes


def _fit(value: Any, sqltype: str) -> tuple[Any, str | None]:
    """(what the column stores, the value as text when it does not fit the column's type)."""
    if isinstance(value, bool):
        return int(value), None
    if isinstance(value, int) and sqltype != "TEXT":
        if -(1 << 63) <= value < 1 << 64:
            return value - (1 << 64) if value >= 1 << 63 else value, None
        return None, str(value)
    if isinstance(value, float) and sqltype != "TEXT":
        if value != value:  # NaN: SQLite would store NULL
            return None, "nan"
        if sqltype == "REAL" or value.is_integer() and -(1 << 63) <= value < 1 << 63:
            return (value if sqltype == "REAL" else int(value)), None
        return None, repr(value)
    text = _as_text(value)
    return (text, None) if sqltype == "TEXT" else (None, text)


def fit_event(ev: dict[str, Any], types: dict[str, str], nul: str | None = None) -> dict[str, Any]:
    """ev with every value its column can bind: objects and lists as JSON text, lone
    surrogates as their escapes (nul: what a NUL character becomes, for PostgreSQL);
    a value a numeric column cannot hold (a 100-bit integer, text) is kept as text
    in ``unfit`` (JSON, column -> text) and its column is NULL — never lost."""
    out: dict[str, Any] = {}
    unfit: dict[str, str] = {}
    for key, value in ev.items():
        sqltype = types.get(key)
        if value is None or sqltype is None or key == "unfit":
            out[key] = value
            continue
        stored, text = _fit(value, sqltype)
        if nul is not None:
            stored = stored.replace("\0", nul) if isinstance(stored, str) else stored
            text = text.replace("\0", nul) if text is not None else None
        out[key] = stored
        if text is not None:
            unfit[key] = text
    if unfit:
        out["unfit"] = _merged_unfit(ev.get("unfit"), unfit, nul)
    return out


def _merged_unfit(before: Any, unfit: dict[str, str], nul: str | None) -> str:
    try:
        earlier = json.loads(before) if isinstance(before, str) else {}
    except ValueError:
        earlier = {"unfit": before}
    merged = {**earlier, **unfit} if isinstance(earlier, dict) else {"unfit": before, **unfit}
    text = _as_text(merged)
    return text.replace("\0", nul) if nul is not None else text


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
        self._types = {t: dict(cols) for t, cols in schema.event_tables().items()}
        self._plans: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}
        self._unknown = UnknownKeys(str(self.path))

    @property
    def unknown_keys(self) -> int:
        """Keys of stored events the model does not name, so not stored (store/unknown.py)."""
        return self._unknown.count

    @contextmanager
    def _transaction(self, begin: str = "BEGIN") -> Iterator[None]:
        """One transaction. On an error it is rolled back, unless SQLite already did (it does on
        SQLITE_FULL and a few others): rolling back then would fail and hide the real error."""
        self.db.execute(begin)
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def _migrate(self) -> None:
        db = self.db
        with self._transaction("BEGIN IMMEDIATE"):
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
        """Insert a batch in one transaction (an event already stored is skipped); returns the rows written.
        A value the binder refuses (an object, a 100-bit integer, a lone surrogate) makes the whole
        batch go again with every value fitted to its column (fit_event)."""
        events = events if isinstance(events, list) else list(events)
        try:
            return self._insert(events)
        except BIND_ERRORS:
            return self._insert([fit_event(ev, self._types[ev["family"]]) for ev in events])

    def _insert(self, events: list[dict[str, Any]]) -> int:
        by_plan: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]] = defaultdict(list)
        plans = self._plans
        unknown = 0
        for ev in events:
            shape = (ev["family"], tuple(ev))
            plan = plans.get(shape) or self._plan(shape)
            by_plan[plan].append(tuple(map(ev.get, plan[1])))
            if len(ev) > len(plan[1]) + 1:  # keys beyond the columns it fills and family
                unknown += self._unknown.in_event(ev)
        written = 0
        with self._transaction():
            for (table, cols), rows in by_plan.items():
                written += self._insert_rows(schema.insert_sql(table, list(cols)), rows)
        self._unknown.count += unknown  # counted once committed: a batch that goes again fitted counts once
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
        with self._transaction():
            self.db.execute("UPDATE runs SET ended = ? WHERE id = ?", (time.time_ns(), run_id))
            self.db.executemany("INSERT INTO stats (run_id, stage, family, counter, value) VALUES (?, ?, ?, ?, ?)",
                                [(run_id, *row) for row in counters])

    def prune(self, before_ns: int) -> dict[str, int]:
        """Delete events older than before_ns (retention); returns rows deleted per table."""
        deleted = {}
        with self._transaction():
            for table in self._columns:
                deleted[table] = self.db.execute(f"DELETE FROM {table} WHERE ts < ?", (before_ns,)).rowcount
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
    """A connection that can only read the main database (store/sqlguard.py), also on read-only media."""
    p = Path(path)
    if not p.is_file():
        raise StoreError(f"{p}: no such database file")
    try:
        db = _connect_readonly(p)
        db.execute("PRAGMA query_only=1")
        db.execute("PRAGMA trusted_schema=OFF")  # a given file's views and triggers call no risky function
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{p}: {exc}") from exc
    sqlguard.guard(db)
    return db


def _readonly_uri(path: Path, **params: str) -> str:
    return f"{path.resolve().as_uri()}?{urlencode({'mode': 'ro', **params})}"


def _writable_location(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A WAL database needs its -shm (and -wal) to be read; on read-only media (an evidence image mounted
    ro) they cannot be created. Measured on a ro mount: with both present, mode=ro reads everything;
    immutable=1 ignores the -wal (its transactions vanish), so it is used only when there is no -wal;
    with a -wal but no -shm, the unix-none VFS in exclusive locking mode reads the -wal into memory."""
    if _writable_location(path):
        return sqlite3.connect(_readonly_uri(path), uri=True)
    if not Path(f"{path}-wal").exists():
        _say_once(path, "opened immutable (nothing may change it while it is read)")
        return sqlite3.connect(_readonly_uri(path, immutable="1"), uri=True)
    db = sqlite3.connect(_readonly_uri(path), uri=True)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
    _say_once(path, "its -wal is read into memory, without locks (nothing may change it while it is read)")
    db = sqlite3.connect(_readonly_uri(path, vfs="unix-none"), uri=True)
    db.execute("PRAGMA locking_mode=EXCLUSIVE")
    return db


_announced: set[Path] = set()


def _say_once(path: Path, how: str) -> None:
    if path not in _announced:
        _announced.add(path)
        log.warning("%s is on read-only media or not writable: %s", path, how)
