"""What a read-only SQLite connection may do, enforced by SQLite itself.

``guard`` (every read-only open): an authorizer that allows reading the main
database and nothing else — no ATTACH (VACUUM INTO attaches its target, so it
is refused too), no DETACH, no writes, no temp objects, no transactions, no
pragma but the read-only ones below, no ``load_extension`` — and
``SQLITE_LIMIT_ATTACHED = 0`` as a second lock on the same door. ``bound``
(the UI's SQL box) adds limits on one value's length, the statement's size and
shape, and a ``printf``/``format`` that refuses a width or precision over the
value limit: SQLite's own printf keeps looping after it hits the length limit,
one uninterruptible call of seconds (measured: ``%.*c`` with 900000000 takes
4 s and returns NULL under a 4 MB limit; three of them 16 s).
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

# Pragmas that only read, asked without an argument.
READ_PRAGMAS = frozenset({
    "application_id", "collation_list", "compile_options", "data_version", "database_list", "encoding",
    "freelist_count", "function_list", "journal_mode", "module_list", "page_count", "page_size", "pragma_list",
    "schema_version", "table_list", "user_version",
})  # not integrity_check / quick_check: one opcode that walks the whole file, past any time limit
# Pragmas that only read whatever their argument (a table or index name).
NAMED_PRAGMAS = frozenset({"foreign_key_list", "index_info", "index_list", "index_xinfo", "table_info",
                           "table_xinfo"})
DENIED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer"})
_ALWAYS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE})


def authorize(action: int, arg1: str | None, arg2: str | None, db_name: str | None, source: str | None) -> int:
    """sqlite3 authorizer: read the main database, call functions, read-only pragmas; deny the rest."""
    if action in _ALWAYS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_READ:  # count(*) reads column "" of database None
        return sqlite3.SQLITE_OK if db_name in ("main", None) else sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_DENY if (arg2 or "").lower() in DENIED_FUNCTIONS else sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and db_name in (None, "main"):
        name = (arg1 or "").lower()
        if name in NAMED_PRAGMAS or (name in READ_PRAGMAS and arg2 is None):
            return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def guard(conn: sqlite3.Connection) -> None:
    """Make conn unable to touch anything but the main database, and that only to read."""
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(authorize)


# The SQL box's bounds. One value's length bounds the quadratic built-ins too (instr, replace: one call
# of (n/2)^2 byte comparisons, measured 1.4 s at 512 KiB and 5.7 s at 1 MB), and the LIKE pattern's length
# bounds LIKE and GLOB (n x m: 14 s at 250 KB x 40 000 with SQLite's default pattern limit of 50 000).
VALUE_LIMIT = 512 * 1024
LIMITS = {
    sqlite3.SQLITE_LIMIT_LENGTH: VALUE_LIMIT,
    sqlite3.SQLITE_LIMIT_SQL_LENGTH: 100_000,
    sqlite3.SQLITE_LIMIT_COLUMN: 200,  # the widest event table has 44 columns; a SELECT may not be wider
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 200,
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 50,
    sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 32,
    sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 1000,
    sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER: 100,
    sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH: 1,
    sqlite3.SQLITE_LIMIT_WORKER_THREADS: 0,
    sqlite3.SQLITE_LIMIT_ATTACHED: 0,
}
HEAP_LIMIT = 512 * 1024 * 1024


def bound(conn: sqlite3.Connection, value_limit: int = VALUE_LIMIT) -> BoundedPrintf:
    """Apply the SQL box's limits to conn; returns its printf, which knows why it refused a call."""
    for limit, value in LIMITS.items():
        conn.setlimit(limit, value_limit if limit == sqlite3.SQLITE_LIMIT_LENGTH else value)
    printf = BoundedPrintf(value_limit)
    for name in ("printf", "format"):
        conn.create_function(name, -1, printf, deterministic=True)
    return printf


def limit_process_heap(limit: int = HEAP_LIMIT) -> None:
    """Bound all SQLite memory of this process (PRAGMA hard_heap_limit is process-wide: the UI's own)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(f"PRAGMA hard_heap_limit = {int(limit)}")
    finally:
        conn.close()


_SPEC = re.compile(r"%([-+ 0#,!]*)(\*|\d*)(?:\.(\*|\d*))?(l{0,2})(.?)", re.DOTALL)
_LEADING_INT = re.compile(r"\s*([+-]?\d+)")


def _as_int(value: Any) -> int:
    """An argument as SQLite's printf reads a `*` width or precision (its integer value, else 0)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) != float("inf") else 0
    if isinstance(value, (str, bytes)):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        found = _LEADING_INT.match(text)
        return int(found.group(1)) if found else 0
    return 0


class BoundedPrintf:
    """printf()/format() for the SQL box: SQLite's own, after refusing a width or precision over the limit.

    SQLite calls it inside a statement; an exception there becomes "user-defined function raised
    exception", so the reason is kept in ``refused`` for the caller to report."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.refused: str | None = None
        self._plain = sqlite3.connect(":memory:")
        self._plain.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit)
        self._plain.set_authorizer(authorize)

    def __call__(self, fmt: Any = None, *args: Any) -> Any:
        if isinstance(fmt, str):
            self._check(fmt, args)
        marks = ", ".join("?" * (1 + len(args)))
        return self._plain.execute(f"SELECT printf({marks})", (fmt, *args)).fetchone()[0]

    def _check(self, fmt: str, args: tuple[Any, ...]) -> None:
        used = 0
        for spec in _SPEC.finditer(fmt):
            _flags, width, precision, _length, kind = spec.groups()
            if kind == "%" and not width and precision is None:
                continue
            for part in (width, precision):
                if part == "*":
                    self._refuse_over(abs(_as_int(args[used])) if used < len(args) else 0, spec.group(0))
                    used += 1
                elif part:
                    self._refuse_over(int(part), spec.group(0))
            used += 1

    def _refuse_over(self, size: int, spec: str) -> None:
        if size > self.limit:
            self.refused = (f"printf: {spec} asks for a width or precision of {size}, over the SQL box's limit "
                            f"of {self.limit} characters")
            raise ValueError(self.refused)
