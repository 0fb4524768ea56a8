"""PostgreSQL store: the same schema as SQLite (store/schema.py drives both),
batched COPY, and no cross-host constraint, so every event table can be
distributed by ``host`` (Citus ``create_distributed_table``; docs/SCALE.md).

A batch is COPYed into a temporary staging table, then moved with
``INSERT … ON CONFLICT (host, source, seq) DO NOTHING``: a batch sent twice
(a forwarder replaying its spool) is stored once. SQL text comes only from
declared identifiers; values always travel as parameters or COPY data.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import psycopg

from ktriage.errors import StoreError
from ktriage.store import schema
from ktriage.store.sqlite import fit_event, fit_int64
from ktriage.store.targets import is_postgres, redact
from ktriage.store.unknown import UnknownKeys

__all__ = ["PostgresStore", "connect", "is_postgres", "redact"]

log = logging.getLogger(__name__)
# what COPY raises for a value its column cannot take (an object, a 100-bit integer, NUL, a lone surrogate)
BIND_ERRORS = (psycopg.DataError, psycopg.ProgrammingError, UnicodeEncodeError, OverflowError)
NUL = "\\x00"  # PostgreSQL text cannot hold NUL: kept as its escape
MIGRATION_LOCK = 0x6B747269  # pg_advisory_xact_lock key: one migration at a time across hosts


def connect(url: str, **kwargs: Any) -> psycopg.Connection:
    try:
        return psycopg.connect(url, connect_timeout=10, **kwargs)
    except psycopg.Error as exc:
        raise StoreError(f"{redact(url)}: {str(exc).strip().splitlines()[0]}") from exc


class PostgresStore:
    def __init__(self, url: str) -> None:
        self.path = redact(url)  # what messages show
        self.db = connect(url, autocommit=False)
        try:
            self._migrate()
        except psycopg.Error as exc:
            self.db.close()
            raise StoreError(f"{self.path}: {str(exc).strip().splitlines()[0]}") from exc
        self._columns = {t: [c for c, _ in cols] for t, cols in schema.event_tables().items()}
        self._types = {t: dict(cols) for t, cols in schema.event_tables().items()}
        self._unknown = UnknownKeys(self.path)

    @property
    def unknown_keys(self) -> int:
        """Keys of stored events the model does not name, so not stored (store/unknown.py)."""
        return self._unknown.count

    def _migrate(self) -> None:
        with self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            for table in schema.BOOKKEEPING:
                self.db.execute(schema.bookkeeping_sql(table, "postgres"))
            for table, cols in schema.BOOKKEEPING_ADDED.items():
                for name, sqltype in cols:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} "
                                    f"{schema.column_type(sqltype, 'postgres')}")
            row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            found = int(row[0]) if row else 0
            if found > schema.SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema version {found} is newer than this ktriage supports "
                                 f"({schema.SCHEMA_VERSION})")
            for table, cols in schema.event_tables().items():
                self._migrate_table(table, cols)
            self.db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (str(schema.SCHEMA_VERSION),))

    def _migrate_table(self, table: str, cols: list[tuple[str, str]]) -> None:
        self.db.execute(schema.create_table_sql(table, cols, "postgres"))
        for name, sqltype in cols:
            self.db.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {schema.ident(name, 'postgres')} "
                            f"{schema.column_type(sqltype, 'postgres')}")
        for index in schema.INDEXES.get(table, ()):
            self.db.execute(schema.index_sql(table, index))
        self.db.execute(schema.unique_sql(table))

    def insert(self, events: Iterable[dict[str, Any]]) -> int:
        """One transaction: COPY each table's rows to staging, move the new ones; returns the rows written.
        A value COPY refuses makes the whole batch go again with every value fitted to its column."""
        events = events if isinstance(events, list) else list(events)
        try:
            return self._insert(events)
        except BIND_ERRORS:
            return self._insert([fit_event(ev, self._types[ev["family"]], NUL) for ev in events])

    def _insert(self, events: list[dict[str, Any]]) -> int:
        by_table: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        unknown = 0
        for ev in events:
            cols = self._columns[ev["family"]]
            by_table[ev["family"]].append(fit_int64(tuple(map(ev.get, cols))))
            if not self._unknown.declared(ev["family"]).issuperset(ev):
                unknown += self._unknown.in_event(ev)
        written = 0
        with self.db.transaction():
            for table, rows in by_table.items():
                written += self._copy(table, rows)
        self._unknown.count += unknown  # counted once committed: a batch that goes again fitted counts once
        return written

    def _copy(self, table: str, rows: list[tuple[Any, ...]]) -> int:
        cols = ", ".join(schema.ident(c, "postgres") for c in self._columns[table])
        stage = f"stage_{table}"
        self.db.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                        f"SELECT {cols} FROM {table} WITH NO DATA")
        with self.db.cursor() as cur:
            with cur.copy(f"COPY {stage} ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} "
                        f"ON CONFLICT ({', '.join(schema.UNIQUE)}) DO NOTHING")
            return cur.rowcount

    def begin_run(self, host: str, source: str, kernel: str, version: str, command: str, probe: dict[str, Any]) -> int:
        with self.db.transaction():
            row = self.db.execute(
                "INSERT INTO runs (host, source, started, kernel, version, command, probe) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (host, source, time.time_ns(), kernel, version, command, json.dumps(probe))).fetchone()
        return int(row[0])

    def end_run(self, run_id: int, counters: list[tuple[str, str, str, int]]) -> None:
        with self.db.transaction():
            self.db.execute("UPDATE runs SET ended = %s WHERE id = %s", (time.time_ns(), run_id))
            with self.db.cursor() as cur:
                cur.executemany("INSERT INTO stats (run_id, stage, family, counter, value) VALUES (%s, %s, %s, %s, %s)",
                                [(run_id, *row) for row in counters])

    def prune(self, before_ns: int) -> dict[str, int]:
        """Delete events older than before_ns; at fleet scale drop daily partitions instead (docs/SCALE.md)."""
        deleted = {}
        with self.db.transaction():
            for table in self._columns:
                deleted[table] = self.db.execute(f"DELETE FROM {table} WHERE ts < %s", (before_ns,)).rowcount
        return deleted

    def ingested(self, sha256: str) -> bool:
        with self.db.transaction():
            return self.db.execute("SELECT 1 FROM ingested WHERE sha256 = %s", (sha256,)).fetchone() is not None

    def mark_ingested(self, sha256: str, path: str, source: str, events: int, detections: int, errors: int,
                      unmapped: int) -> None:
        with self.db.transaction():
            self.db.execute("INSERT INTO ingested (sha256, path, source, events, detections, errors, unmapped, ts) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (sha256) DO NOTHING",
                            (sha256, path, source, events, detections, errors, unmapped, time.time_ns()))

    # -- runs that may not have ended cleanly (detect/tamper.py, recovery.py, watchdog.py) ------------

    def set_run_process(self, run_id: int, pid: int, pid_start: int) -> None:
        with self.db.transaction():
            self.db.execute("UPDATE runs SET pid = %s, pid_start = %s WHERE id = %s", (pid, pid_start, run_id))

    def open_runs(self, host: str) -> list[tuple[int, int | None, int | None, int]]:
        """(id, pid, pid_start, started) of this host's recordings that have no end."""
        with self.db.transaction():
            return [tuple(r) for r in self.db.execute(
                "SELECT id, pid, pid_start, started FROM runs WHERE host = %s AND source = 'ebpf' "
                "AND ended IS NULL ORDER BY id", (host,)).fetchall()]

    def end_run_abnormally(self, run_id: int, reason: str) -> bool:
        """Close a run its recorder could not close; False when it has an end already."""
        with self.db.transaction():
            cur = self.db.execute("UPDATE runs SET ended = %s, end_reason = %s WHERE id = %s AND ended IS NULL",
                                  (time.time_ns(), reason, run_id))
            return cur.rowcount == 1

    def close(self) -> None:
        self.db.close()
