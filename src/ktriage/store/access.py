"""Open a store for writing by path or URL (reading: store/readonly.py):
``postgresql://…`` is PostgreSQL, anything else a SQLite file.

The PostgreSQL driver is loaded only for a ``postgresql://`` target (a SQLite ingest
starts faster without it): :func:`database_errors` is what to catch, evaluated where an
error is caught; ``DB_ERRORS`` loads psycopg, for the commands that use it anyway.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from ktriage.store.sqlite import SqliteStore
from ktriage.store.targets import is_postgres


def database_errors() -> tuple[type[Exception], ...]:
    """What the database drivers raise: sqlite3's errors, and psycopg's once it is loaded (none
    can be raised before). ``except database_errors():`` is evaluated only when something is raised."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error,) if psycopg is None else (sqlite3.Error, psycopg.Error)


def __getattr__(name: str) -> Any:
    if name == "DB_ERRORS":  # record, serve, ui and the fleet forwarder: they load psycopg anyway
        import psycopg

        return (sqlite3.Error, psycopg.Error)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def describe(exc: BaseException) -> str:
    """A database error in one line, naming a full disk as such (SQLite says "database or disk is
    full"; PostgreSQL's message names neither the disk nor the server)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if getattr(exc, "sqlite_errorname", None) == "SQLITE_FULL":
        return f"disk full: {first}"
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.errors.DiskFull):
        return f"disk full on the database server: {first}"
    return first


class Store(Protocol):
    path: Any

    @property
    def unknown_keys(self) -> int: ...  # keys of inserted events the model does not name: not stored, counted
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
    if is_postgres(target):
        from ktriage.store.postgres import PostgresStore

        return PostgresStore(target)
    return SqliteStore(target)
