"""Store migrations: additive, never destructive; newer schemas refused."""

from __future__ import annotations

import sqlite3

import pytest

from ktriage.errors import StoreError
from ktriage.store import schema
from ktriage.store.sqlite import SqliteStore


def test_older_database_gains_missing_columns_and_keeps_rows(tmp_path) -> None:
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE file (id INTEGER PRIMARY KEY, ts INTEGER, path TEXT)")
    con.execute("INSERT INTO file (ts, path) VALUES (1, '/etc/passwd')")
    con.commit()
    con.close()
    store = SqliteStore(db)
    store.insert([{"family": "file", "ts": 2, "path": "/etc/shadow", "op": "open_write", "pid": 7}])
    store.close()
    con = sqlite3.connect(db)
    cols = {row[1] for row in con.execute("PRAGMA table_info(file)")}
    assert {c for c, _ in schema.event_tables()["file"]} <= cols
    assert con.execute("SELECT path, op FROM file ORDER BY ts").fetchall() == [("/etc/passwd", None),
                                                                              ("/etc/shadow", "open_write")]
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(schema.SCHEMA_VERSION),)


def test_newer_schema_is_refused_untouched(tmp_path) -> None:
    db = tmp_path / "new.db"
    SqliteStore(db).close()
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(schema.SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteStore(db)
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(schema.SCHEMA_VERSION + 1)


def test_unsigned_64_bit_values_are_stored_once_as_signed(tmp_path) -> None:
    store = SqliteStore(tmp_path / "u64.db")
    events = [{"family": "access", "seq": i, "data": value} for i, value in enumerate((1, 2**64 - 2, 3))]
    assert store.insert(events) == 3
    rows = store.db.execute("SELECT seq, data FROM access ORDER BY seq").fetchall()
    store.close()
    assert rows == [(0, 1), (1, -2), (2, 3)]
