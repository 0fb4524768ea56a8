"""A read-only connection to either database, with one time limit and one message for it.

SQLite: opened read-only and guarded by an authorizer (store/sqlguard.py). PostgreSQL: every
transaction is READ ONLY. Statements take the driver's own parameter marker (``param``: ``?`` for
sqlite3, ``%s`` for psycopg); the named reads of store/reads.py write their SQL with it, and SQL
from outside (``ktriage query``, the UI's SQL box) runs as given, with no parameters.

The time limit counts the time the database spends on a statement — PostgreSQL's
``statement_timeout``; on SQLite a progress handler with a budget that only time inside
``fetchmany`` spends, so a reader paging slowly through ``ktriage query | less`` is not stopped.
Reaching it raises :class:`ReadStopped` with the same words on both.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ktriage.errors import ReadStopped, StoreError
from ktriage.store.access import database_errors
from ktriage.store.sqlite import open_readonly as sqlite_readonly
from ktriage.store.targets import is_postgres, redact

READ_TIME_LIMIT_S = 30.0
ROW_BATCH = 256
PROGRESS_OPCODES = 10_000


def stopped_message(seconds: float) -> str:
    return f"query stopped after {seconds:g} s (the time limit)"


class ReadOnly:
    """time_limit_s: each statement's, None for none."""

    def __init__(self, target: str, time_limit_s: float | None = READ_TIME_LIMIT_S) -> None:
        self.postgres = is_postgres(target)
        self.name = redact(target)
        self.param = "%s" if self.postgres else "?"
        if self.postgres:
            from ktriage.store.postgres import connect

            self.conn: Any = connect(target, autocommit=True)
            self.conn.read_only = True
            self.conn.execute("SET default_transaction_read_only = on")
        else:
            self.conn = sqlite_readonly(target)
            self.conn.set_progress_handler(self._past_deadline, PROGRESS_OPCODES)
        self.time_limit_s: float | None = None
        self._budget = self._deadline = float("inf")
        self.set_time_limit(time_limit_s)

    def set_time_limit(self, seconds: float | None) -> None:
        """Stop each later statement once the database has spent seconds on it (None: never)."""
        self.time_limit_s = seconds
        if self.postgres:
            millis = 0 if seconds is None else max(1, round(seconds * 1000))
            self.conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(millis),))

    def _past_deadline(self) -> int:
        return int(time.monotonic() > self._deadline)

    def stopped(self, exc: BaseException) -> bool:
        """Whether exc is a statement stopped by the time limit (or the UI's interrupt of one)."""
        if self.postgres:
            import psycopg

            return isinstance(exc, psycopg.errors.QueryCanceled)
        return getattr(exc, "sqlite_errorname", None) == "SQLITE_INTERRUPT"

    def _translated(self, exc: BaseException) -> BaseException:
        if self.stopped(exc):
            return ReadStopped(stopped_message(self.time_limit_s or 0))
        return exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self._budget = float("inf") if self.time_limit_s is None else self.time_limit_s
        started = time.monotonic()
        self._deadline = started + self._budget
        try:
            cur = self.conn.execute(sql, params) if params else self.conn.execute(sql)
        except database_errors() as exc:
            raise self._translated(exc) from exc
        self._budget -= time.monotonic() - started
        return cur

    def rows(self, cur: Any) -> Iterator[tuple[Any, ...]]:
        """The rows of cur (from execute), fetched ROW_BATCH at a time within the statement's time limit."""
        while True:
            started = time.monotonic()
            self._deadline = started + self._budget
            try:
                batch = cur.fetchmany(ROW_BATCH)
            except database_errors() as exc:
                raise self._translated(exc) from exc
            self._budget -= time.monotonic() - started
            if not batch:
                return
            yield from batch

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.rows(self.execute(sql, params)))

    def dicts(self, sql: str, params: Sequence[Any] = ()) -> Iterable[dict[str, Any]]:
        """Each row as a dict of its column names."""
        cur = self.execute(sql, params)
        names = [d[0] for d in cur.description]
        return (dict(zip(names, row)) for row in self.rows(cur))

    def tables(self) -> set[str]:
        if self.postgres:
            rows = self.all("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        else:
            rows = self.all("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {r[0] for r in rows}

    def close(self) -> None:
        self.conn.close()


def open_readonly(target: str, time_limit_s: float | None = READ_TIME_LIMIT_S) -> ReadOnly:
    try:
        return ReadOnly(target, time_limit_s)
    except database_errors() as exc:
        raise StoreError(f"{redact(target)}: {exc}") from exc
