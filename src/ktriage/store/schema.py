"""The database schema, derived from the event model.

One table per family (Kernel Whisperer's tables: process ~ Process,
image ~ ImageLoads, file ~ File, network ~ Network), every one with the common
columns, plus ``meta`` (schema version), ``runs`` (one row per recording or
ingest) and ``stats`` (per-run counters: sent, lost, dropped, written).

Migration is additive: missing tables, columns and indexes are created; nothing
is ever dropped. SQL text is built only from these declared identifiers; values
always travel as parameters.
"""

from __future__ import annotations

from ktriage.model.families import FAMILIES, columns

SCHEMA_VERSION = 1

BOOKKEEPING = {
    "meta": "key TEXT PRIMARY KEY, value TEXT",
    "runs": ("id INTEGER PRIMARY KEY, host TEXT, source TEXT, started INTEGER, ended INTEGER, "
             "kernel TEXT, version TEXT, command TEXT, probe TEXT"),
    "stats": "run_id INTEGER, stage TEXT, family TEXT, counter TEXT, value INTEGER",
    "ingested": ("sha256 TEXT PRIMARY KEY, path TEXT, source TEXT, events INTEGER, detections INTEGER, "
                 "errors INTEGER, unmapped INTEGER, ts INTEGER"),
}

# Columns added to bookkeeping tables after their first release: created on open when missing.
BOOKKEEPING_ADDED = {
    "runs": (("pid", "INTEGER"),  # the recorder's process, and its start time (/proc/PID/stat field 22):
             ("pid_start", "INTEGER"),  # a run without an end whose process is gone did not end cleanly
             ("end_reason", "TEXT")),  # set when a run is closed by someone else (watchdog, next start)
}

INDEXES = {family: (("ts",), ("pid", "ts")) for family in FAMILIES}
# one event, named by (host, source, seq): replays and re-sends are ignored, never stored twice
UNIQUE = ("host", "source", "seq")
PG_TYPES = {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION", "TEXT": "TEXT"}


def event_tables() -> dict[str, list[tuple[str, str]]]:
    """table -> [(column, sqltype)] for every event family."""
    return {family: [(c.name, c.sqltype) for c in columns(family)] for family in FAMILIES}


def ident(name: str, dialect: str) -> str:
    """A column name as the dialect needs it: PostgreSQL reserves some of ours (``end``)."""
    return f'"{name}"' if dialect == "postgres" else name


def column_type(sqltype: str, dialect: str) -> str:
    return PG_TYPES.get(sqltype, sqltype) if dialect == "postgres" else sqltype


def create_table_sql(table: str, cols: list[tuple[str, str]], dialect: str = "sqlite") -> str:
    body = ", ".join(f"{ident(name, dialect)} {column_type(sqltype, dialect)}" for name, sqltype in cols)
    key = "id BIGSERIAL" if dialect == "postgres" else "id INTEGER PRIMARY KEY"
    return f"CREATE TABLE IF NOT EXISTS {table} ({key}, {body})"


def bookkeeping_sql(table: str, dialect: str = "sqlite") -> str:
    body = BOOKKEEPING[table]
    if dialect == "postgres":
        body = body.replace("id INTEGER PRIMARY KEY", "id BIGSERIAL PRIMARY KEY").replace("INTEGER", "BIGINT")
    return f"CREATE TABLE IF NOT EXISTS {table} ({body})"


def index_sql(table: str, cols: tuple[str, ...]) -> str:
    return f"CREATE INDEX IF NOT EXISTS {table}_{'_'.join(cols)} ON {table} ({', '.join(cols)})"


def unique_sql(table: str) -> str:
    return f"CREATE UNIQUE INDEX IF NOT EXISTS {table}_event ON {table} ({', '.join(UNIQUE)})"


def insert_sql(table: str, cols: list[str]) -> str:
    return f"INSERT OR IGNORE INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
