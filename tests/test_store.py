"""The store, against SQLite and a real PostgreSQL server with the same
expectations: migrations are additive, newer schemas are refused, events are
stored exactly once, u64 values fit, and the read side (query, detections,
replay, retention) works on both."""

from __future__ import annotations

import json
import sqlite3

import psycopg
import pytest

from conftest import ktriage
from ktriage.errors import StoreError
from ktriage.store import schema
from ktriage.store.access import open_store
from ktriage.store.postgres import is_postgres
from ktriage.store.readonly import open_readonly


def _raw(target: str):
    """A plain read-write connection to inspect or tamper with the database."""
    if is_postgres(target):
        return psycopg.connect(target, autocommit=True)
    return sqlite3.connect(target, isolation_level=None)


def _ph(target: str) -> str:
    return "%s" if is_postgres(target) else "?"


def _count(target: str, table: str) -> int:
    con = _raw(target)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


def test_older_database_gains_missing_columns_and_keeps_rows(db_target: str) -> None:
    con = _raw(db_target)
    con.execute("CREATE TABLE file (id BIGINT, ts BIGINT, path TEXT)")
    con.execute(f"INSERT INTO file (ts, path) VALUES (1, {_ph(db_target)})", ("/etc/passwd",))
    con.close()
    store = open_store(db_target)
    store.insert([{"family": "file", "ts": 2, "path": "/etc/shadow", "op": "open_write", "pid": 7, "host": "h",
                   "source": "s", "seq": 1}])
    store.close()
    con = _raw(db_target)
    rows = con.execute("SELECT path, op FROM file ORDER BY ts").fetchall()
    assert [tuple(r) for r in rows] == [("/etc/passwd", None), ("/etc/shadow", "open_write")]
    version = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert version == str(schema.SCHEMA_VERSION)
    con.close()


def test_newer_schema_is_refused_untouched(db_target: str) -> None:
    open_store(db_target).close()
    con = _raw(db_target)
    con.execute(f"UPDATE meta SET value = {_ph(db_target)} WHERE key = 'schema_version'",
                (str(schema.SCHEMA_VERSION + 1),))
    con.close()
    with pytest.raises(StoreError, match="newer"):
        open_store(db_target)
    con = _raw(db_target)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
        schema.SCHEMA_VERSION + 1)
    con.close()


def test_events_are_stored_exactly_once(db_target: str) -> None:
    store = open_store(db_target)
    batch = [{"family": "process", "action": "exec", "host": "a", "source": "ebpf:1", "seq": i, "ts": i, "pid": i}
             for i in range(100)]
    assert store.insert(batch) == 100
    assert store.insert(batch[50:] + [dict(batch[0], host="b")]) == 1, "a re-sent batch adds only what is new"
    store.close()
    assert _count(db_target, "process") == 101


def test_events_of_many_shapes_in_one_batch_keep_every_field(db_target: str) -> None:
    base = {"host": "h", "source": "s", "ts": 1}
    events = [dict(base, family="process", seq=1, action="fork", pid=5, child_pid=6),
              dict(base, family="process", seq=2, pid=6, action="exit", exit_status=3, not_a_column="x"),
              dict(base, family="file", seq=3, op="create", path="/tmp/x"),
              dict(base, family="process", seq=4, action="fork", child_pid=8, pid=7)]  # keys in another order
    store = open_store(db_target)
    assert store.insert(events) == 4
    store.close()
    con = _raw(db_target)
    rows = con.execute("SELECT seq, action, pid, child_pid, exit_status FROM process ORDER BY seq").fetchall()
    assert [tuple(r) for r in rows] == [(1, "fork", 5, 6, None), (2, "exit", 6, None, 3), (4, "fork", 7, 8, None)]
    assert con.execute("SELECT op, path FROM file").fetchone() == ("create", "/tmp/x")
    con.close()


def test_unsigned_64_bit_values_are_stored_once_as_signed(db_target: str) -> None:
    store = open_store(db_target)
    events = [{"family": "access", "host": "h", "source": "s", "seq": i, "data": v}
              for i, v in enumerate((1, 2**64 - 2, 3))]
    assert store.insert(events) == 3
    store.close()
    con = _raw(db_target)
    assert [tuple(r) for r in con.execute("SELECT seq, data FROM access ORDER BY seq").fetchall()] == [
        (0, 1), (1, -2), (2, 3)]
    con.close()


def test_runs_stats_and_ingested_bookkeeping(db_target: str) -> None:
    store = open_store(db_target)
    run = store.begin_run("h", "ebpf:x", "6.18", "0.1", "ktriage record", {"tracepoint": True})
    store.end_run(run, [("bpf", "file", "sent", 5), ("bpf", "file", "lost", 0)])
    assert not store.ingested("abc")
    store.mark_ingested("abc", "/x.evtx", "evtx:abc", 3, 1, 0, 2)
    assert store.ingested("abc")
    store.close()
    assert _count(db_target, "stats") == 2 and _count(db_target, "runs") == 1


def _seed_detections(target: str) -> None:
    store = open_store(target)
    store.insert([{"family": "detection", "host": "h", "source": "detect/x", "seq": i, "ts": 10 + i,
                   "name": f"D{i}", "severity": 3 + i, "actor_pid": 5, "target_pid": 6, "reason": "r",
                   "technique": "T1055", "event_ids": json.dumps([f"access/x#{i}"]), "evidence": "[]"}
                  for i in range(4)])
    store.close()


def test_query_and_detections_commands_on_both(db_target: str) -> None:
    _seed_detections(db_target)
    out = ktriage("query", "--db", db_target, "--format", "jsonl", "SELECT name, severity FROM detection ORDER BY seq")
    assert out.returncode == 0, out.stderr
    assert [json.loads(x)["name"] for x in out.stdout.splitlines()] == ["D0", "D1", "D2", "D3"]
    det = ktriage("detections", "--db", db_target, "--format", "jsonl", "--min-severity", "5")
    assert [(json.loads(x)["name"], json.loads(x)["event_ids"]) for x in det.stdout.splitlines()] == [
        ("D2", ["access/x#2"]), ("D3", ["access/x#3"])]
    write = ktriage("query", "--db", db_target, "DELETE FROM detection")
    assert write.returncode != 0 and write.stderr.startswith("ktriage: error: query failed")
    assert _count(db_target, "detection") == 4


def test_readonly_lists_tables_on_both(db_target: str) -> None:
    open_store(db_target).close()
    db = open_readonly(db_target)
    assert {"process", "access", "detection", "runs", "stats"} <= db.tables()
    db.close()


def test_bad_postgres_url_is_one_line(tmp_path) -> None:
    out = ktriage("query", "--db", f"postgresql://nobody:secret@/x?host={tmp_path}&port=1", "SELECT 1")
    assert out.returncode != 0
    line = out.stderr.strip()
    assert line.startswith("ktriage: error: postgresql://nobody:***@") and "secret" not in line
    assert len(line.splitlines()) == 1


def test_retention_prunes_old_events_only(db_target: str) -> None:
    import time as _time

    now = _time.time_ns()
    day = 86_400 * 10**9
    store = open_store(db_target)
    store.insert([{"family": "file", "host": "h", "source": "s", "seq": i, "ts": now - age * day}
                  for i, age in enumerate((40, 31, 29, 1))])
    store.close()
    out = ktriage("prune", "--db", db_target, "--older-than", "30")
    assert out.returncode == 0 and "pruned 2 events" in out.stderr, out.stderr
    assert _count(db_target, "file") == 2
