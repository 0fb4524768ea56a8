"""The UI's SQL box: one read-only statement, bounded in time, rows, reply
bytes and, on SQLite, the length of any one value.

SQLite: the connection is already guarded (store/sqlguard.py: reads of the
main database only); ``sqlguard.bound`` adds the value-length and shape limits
and a printf that refuses huge widths. PostgreSQL: the statement runs as a
server-side cursor (``DECLARE … CURSOR FOR``, extended protocol) in a READ ONLY
transaction, so it is one SELECT or VALUES — never COPY, SET or a second
statement — and rows come in batches, not all at once; a role that could reach
the server's files is refused (store/pgguard.py).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from ktriage.errors import ReadStopped
from ktriage.store import pgguard, sqlguard
from ktriage.store.readonly import ReadOnly, stopped_message
from ktriage.ui.values import jsonable, size

PG_BATCH = 100


@dataclass(frozen=True)
class SqlLimits:
    seconds: float = 3.0
    rows: int = 1000
    reply_bytes: int = 4 * 1024 * 1024
    value_bytes: int = sqlguard.VALUE_LIMIT
    sql_chars: int = 100_000


class SqlFailed(Exception):
    """The statement failed or was stopped; the message says why in one line."""


class SqlRefused(Exception):
    """The SQL box is off for this database (a PostgreSQL role that reaches the server's files)."""


def refusal(db: ReadOnly) -> str | None:
    """Why the SQL box is off for db, or None when it is on."""
    if not db.postgres:
        return None
    reasons = pgguard.server_reach(db.conn)
    if not reasons:
        return None
    return ("the SQL box is off: " + "; ".join(reasons) + " (such a role can read or write the server's files "
            "even in a read-only transaction); give the UI a URL whose role may only SELECT")


def run_sql(db: ReadOnly, sql: str, limits: SqlLimits = SqlLimits()) -> dict[str, Any]:
    if db.postgres:
        return _run_postgres(db, sql, limits)
    return _run_sqlite(db, sql, limits)


def _collect(columns: list[str], rows: Iterable[Any], limits: SqlLimits) -> dict[str, Any]:
    out: list[list[Any]] = []
    used, truncated = 0, None
    for row in rows:
        if len(out) == limits.rows:
            truncated = "rows"
            break
        values = [jsonable(v) for v in row]
        used += size(values)
        if used > limits.reply_bytes:
            truncated = "bytes"
            break
        out.append(values)
    return {"columns": columns, "rows": out, "truncated": truncated, "row_limit": limits.rows,
            "byte_limit": limits.reply_bytes}


# SQLite ----------------------------------------------------------------------------------------------------------

def _run_sqlite(db: ReadOnly, sql: str, limits: SqlLimits) -> dict[str, Any]:
    """The progress handler stops the statement between opcodes; the watchdog's sqlite3_interrupt also
    stops the long loops inside one opcode that check for it (counting a table, sorting)."""
    printf = sqlguard.bound(db.conn, limits.value_bytes)
    db.set_time_limit(limits.seconds)
    watchdog = threading.Timer(limits.seconds, db.conn.interrupt)
    watchdog.daemon = True
    watchdog.start()
    try:
        cur = db.execute(sql)
        columns = [d[0] for d in cur.description or ()]
        return _collect(columns, db.rows(cur) if columns else (), limits)
    except ReadStopped as exc:
        raise SqlFailed(str(exc)) from exc
    except sqlite3.Error as exc:
        raise SqlFailed(_sqlite_reason(exc, printf.refused, limits)) from exc
    except MemoryError as exc:  # SQLite's heap limit (sqlguard.limit_process_heap) reached
        raise SqlFailed("query failed: out of memory (the UI's limit on SQLite's memory)") from exc
    finally:
        watchdog.cancel()


def _sqlite_reason(exc: sqlite3.Error, printf_refused: str | None, limits: SqlLimits) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "user-defined function raised exception" in text and printf_refused:
        return printf_refused
    if text in ("not authorized", "authorization denied") or "too many attached" in text:
        return (f"refused ({text}): the SQL box only reads the main database — no ATTACH, VACUUM, writes, "
                f"temporary objects, transactions or pragmas that set anything")
    if "too big" in text:
        return f"{text} (the SQL box's limit is {limits.value_bytes} bytes for one value)"
    return text


# PostgreSQL ------------------------------------------------------------------------------------------------------

def _run_postgres(db: ReadOnly, sql: str, limits: SqlLimits) -> dict[str, Any]:
    refused = refusal(db)
    if refused:
        raise SqlRefused(refused)
    db.set_time_limit(limits.seconds)
    started = time.monotonic()
    try:
        with db.conn.transaction(), db.conn.cursor(name="ktriage_sql_box") as cur:
            cur.execute(sql)  # DECLARE "ktriage_sql_box" CURSOR FOR <sql>: one SELECT or VALUES
            columns = [d.name for d in cur.description or ()]
            return _collect(columns, _batches(cur, started, limits), limits)
    except psycopg.errors.QueryCanceled as exc:
        raise SqlFailed(stopped_message(limits.seconds)) from exc
    except psycopg.Error as exc:
        raise SqlFailed(str(exc).strip().splitlines()[0] or type(exc).__name__) from exc


def _batches(cur: Any, started: float, limits: SqlLimits) -> Iterator[Any]:
    """The cursor's rows, fetched PG_BATCH at a time, stopped at the time limit (each FETCH has its own)."""
    while True:
        if time.monotonic() - started > limits.seconds:
            raise SqlFailed(stopped_message(limits.seconds))
        batch = cur.fetchmany(PG_BATCH)
        if not batch:
            return
        yield from batch
