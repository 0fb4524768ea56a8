"""Open a store for writing, or a database for reading, by path or URL:
``postgresql://…`` is PostgreSQL, anything else a SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

import psycopg

from ktriage.errors import StoreError
from ktriage.store.postgres import PostgresStore, connect, is_postgres, redact
from ktriage.store.sqlite import SqliteStore
from ktriage.store.sqlite import open_readonly as sqlite_readonly

DB_ERRORS = (sqlite3.Error, psycopg.Error)
READ_TIMEOUT_MS = 30_000


class Store(Protocol):
    path: Any

    def insert(self, events: Sequence[dict[str, Any]]) -> int: ...
    def begin_run(self, host: str, source: str, kernel: str, version: str, command: str,
                  probe: dict[str, Any]) -> int: ...
    def end_run(self, run_id: int, counters: list[tuple[str, str, str, int]]) -> None: ...
    def ingested(self, sha256: str) -> bool: ...
    def mark_ingested(self, sha256: str, path: str, source: str, events: int, detections: int, errors: int,
                      unmapped: int) -> None: ...
    def prune(self, before_ns: int) -> dict[str, int]: ...
    def set_run_process(self, run_id: int, pid: int, pid_start: int) -> None: ...
    def open_runs(self, host: str) -> list[tuple[int, int | None, int | None, int]]: ...
    def end_run_abnormally(self, run_id: int, reason: str) -> bool: ...
    def close(self) -> None: ...


def open_store(target: str) -> Store:
    return PostgresStore(target) if is_postgres(target) else SqliteStore(target)


class ReadOnly:
    """A read-only connection with one parameter style (``?``) for both databases."""

    def __init__(self, target: str) -> None:
        self.postgres = is_postgres(target)
        self.name = redact(target)
        if self.postgres:
            self.conn: Any = connect(target, autocommit=True)
            self.conn.execute("SET default_transaction_read_only = on")
            self.conn.execute(f"SET statement_timeout = {READ_TIMEOUT_MS}")
        else:
            self.conn = sqlite_readonly(target)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.postgres:
            sql = sql.replace("%", "%%").replace("?", "%s") if params else sql
        return self.conn.execute(sql, params) if params else self.conn.execute(sql)

    def tables(self) -> set[str]:
        if self.postgres:
            rows = self.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        else:
            rows = self.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {r[0] for r in rows}

    def close(self) -> None:
        self.conn.close()


def open_readonly(target: str) -> ReadOnly:
    try:
        return ReadOnly(target)
    except DB_ERRORS as exc:
        raise StoreError(f"{redact(target)}: {exc}") from exc
