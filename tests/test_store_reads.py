"""The store's read side (store/readonly.py, store/reads.py) on SQLite and a real PostgreSQL server,
with the same expectations: each named read's answer, text that SQL would read as syntax taken as
text, and one time limit with one message on both."""

from __future__ import annotations

import json
import random
import time

import pytest

from conftest import ktriage
from ktriage.errors import ReadStopped
from ktriage.store import reads
from ktriage.store.access import open_store
from ktriage.store.readonly import ReadOnly, open_readonly

H = "host-a"
ODD_CMDLINE = "curl http://x/50%_off?a='b' \\ done"


def _ev(family: str, seq: int, pid: int, **fields: object) -> dict:
    return {"family": family, "host": fields.pop("host", H), "source": "ebpf:t", "seq": seq, "ts": 1000 + seq,
            "pid": pid, **fields}


SEEDED = [
    _ev("process", 1, 100, action="exec", ppid=1, image="/bin/bash", cmdline="bash"),
    _ev("process", 2, 100, action="fork", child_pid=101),
    _ev("process", 3, 101, action="exec", ppid=100, image="/usr/bin/curl", cmdline=ODD_CMDLINE),
    _ev("process", 4, 102, action="exec", ppid=100, image="/usr/bin/id", cmdline="id"),
    _ev("process", 5, 100, action="exec", ppid=1, image="/bin/bash", cmdline="bash", host="host-b"),
    _ev("file", 6, 101, op="open_write", path="/tmp/a"),
    _ev("file", 7, 101, op="open_write", path="/tmp/a"),
    _ev("file", 8, 101, op="open_read", path="/tmp/b"),
    _ev("network", 9, 101, op="connect", proto="tcp", raddr="10.0.0.1", rport=80),
    _ev("image", 10, 101, path="/lib/libc.so.6"),
    _ev("detection", 11, 101, name="remote_thread", severity=8, actor_pid=101, target_pid=200,
        target_image="/usr/bin/sshd", image="/usr/bin/curl", reason="r", event_ids="[]"),
    _ev("detection", 12, 300, name="ptrace_attach", severity=5, actor_pid=300, target_pid=101, image="/tmp/x",
        reason="r", event_ids="[]"),
    _ev("detection", 13, 5, name="ptrace_attach", severity=2, actor_pid=5, target_pid=6, reason="r",
        event_ids="[]", host="host-b"),
]


@pytest.fixture
def seeded(db_target: str) -> ReadOnly:
    store = open_store(db_target)
    store.insert([dict(e) for e in SEEDED])
    store.close()
    db = open_readonly(db_target)
    yield db
    db.close()


def _names(events: list[dict]) -> list[tuple[str, int]]:
    return [(e["name"], e["seq"]) for e in events]


def test_detections_by_every_filter(seeded: ReadOnly) -> None:
    every = reads.DetectionFilter()
    assert _names(reads.detections(seeded, every)) == [("remote_thread", 11), ("ptrace_attach", 12),
                                                       ("ptrace_attach", 13)]
    assert _names(reads.detections(seeded, every, newest_first=True, limit=2)) == [("ptrace_attach", 13),
                                                                                  ("ptrace_attach", 12)]
    for which, seqs in ((reads.DetectionFilter(min_severity=5), [11, 12]),
                        (reads.DetectionFilter(name="ptrace_attach"), [12, 13]),
                        (reads.DetectionFilter(host="host-b"), [13]),
                        (reads.DetectionFilter(pid=101), [11, 12]),
                        (reads.DetectionFilter(since=1012), [12, 13]),
                        (reads.DetectionFilter(until=1011), [11]),
                        (reads.DetectionFilter(name="remote_thread", host="host-b"), [])):
        assert [d["seq"] for d in reads.detections(seeded, which)] == seqs, which
    first = reads.detections(seeded, every)[0]
    assert first["family"] == "detection" and "id" not in first and first["target_image"] == "/usr/bin/sshd"


def test_one_event_by_its_source_and_seq(seeded: ReadOnly) -> None:
    found = reads.event_at(seeded, "process", "ebpf:t", 3)
    assert found is not None and found["cmdline"] == ODD_CMDLINE and found["family"] == "process"
    assert reads.event_at(seeded, "process", "ebpf:t", 99) is None
    assert reads.event_at(seeded, "file", "ebpf:other", 6) is None


def test_one_process_on_one_host(seeded: ReadOnly) -> None:
    assert [e["seq"] for e in reads.process_events(seeded, H, 100)] == [2, 1]
    assert [e["seq"] for e in reads.process_events(seeded, None, 100)] == [5, 2, 1]
    assert reads.child_pids(seeded, H, 100) == [101, 102]
    assert reads.child_pids(seeded, "host-b", 100) == []
    assert reads.detection_edges(seeded, H, 101) == {
        "injected_into": [{"pid": 200, "image": "/usr/bin/sshd", "detection": "remote_thread", "severity": 8}],
        "injected_by": [{"pid": 300, "image": "/tmp/x", "detection": "ptrace_attach", "severity": 5}]}
    assert reads.files_written(seeded, H, 101) == [{"op": "open_write", "path": "/tmp/a", "path2": None, "count": 2}]
    assert reads.network_peers(seeded, H, 101) == [
        {"op": "connect", "proto": "tcp", "raddr": "10.0.0.1", "rport": 80, "count": 1}]
    assert reads.images_loaded(seeded, H, 101) == ["/lib/libc.so.6"]
    assert sorted(e["seq"] for e in reads.recent_events(seeded, H, 101, limit=1)) == [3, 8, 9, 10]


@pytest.mark.parametrize("text, seqs", [
    ("50%_off?a='b' \\ done", [3]),  # LIKE's wildcards, a parameter marker, a quote and the escape as text
    ("%", [3]), ("_", [3]), ("%o", []), ("0_", []), ("\\", [3]), ("?", [3]), ("'", [3]), ("bash", [5, 1]), ("50x", [])])
def test_search_takes_text_as_text(seeded: ReadOnly, text: str, seqs: list[int]) -> None:
    assert [e["seq"] for e in reads.containing(seeded, "process", ("cmdline", "path"), text, 10)] == seqs


def test_search_of_random_text_never_fails(seeded: ReadOnly) -> None:
    rnd = random.Random(15)
    alphabet = "%_\\?'\"$:;-*/()[]{}aZ0 \t\u00e9\u4e2d"
    for _ in range(300):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(1, 12)))
        found = reads.containing(seeded, "process", ("cmdline",), text, 10)
        assert all(text in (e["cmdline"] or "") for e in found), text


def test_whole_database_reads(seeded: ReadOnly) -> None:
    counts = reads.row_counts(seeded)
    assert (counts["process"], counts["file"], counts["detection"], counts["memory"]) == (5, 3, 3, 0)
    assert sorted(reads.detection_hosts(seeded)) == [H, "host-b"]
    assert reads.detection_names(seeded) == ["ptrace_attach", "remote_thread"]
    assert sorted((row_id, e["seq"]) for row_id, e in reads.stored_rows(seeded, "file"))[0][1] == 6


def _slow_sql(db: ReadOnly) -> str:
    if db.postgres:
        return "SELECT pg_sleep(20)"
    return "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


def test_one_time_limit_and_one_message_on_both(db_target: str) -> None:
    open_store(db_target).close()
    db = open_readonly(db_target, time_limit_s=0.5)
    started = time.monotonic()
    with pytest.raises(ReadStopped) as stopped:
        db.all(_slow_sql(db))
    assert str(stopped.value) == "query stopped after 0.5 s (the time limit)"
    assert time.monotonic() - started < 5
    assert db.all("SELECT 1") == [(1,)]  # the connection still reads
    if not db.postgres:  # SQLite makes rows as they are read: the limit also stops a statement between them
        endless = db.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c")
        with pytest.raises(ReadStopped):
            for _ in db.rows(endless):
                pass
    db.close()
    out = ktriage("query", "--db", db_target, "--time-limit", "0.5", _slow_sql(db))
    assert out.returncode == 5 and out.stderr == "ktriage: error: query stopped after 0.5 s (the time limit)\n"


def test_a_slow_reader_is_not_stopped(db_target: str) -> None:
    """The limit counts the database's time: a reader that takes longer than it between rows reads them all."""
    open_store(db_target).close()
    db = open_readonly(db_target, time_limit_s=0.5)
    cur = db.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000) SELECT x FROM c")
    got = 0
    for got, _ in enumerate(db.rows(cur), 1):
        if got % 256 == 0:
            time.sleep(0.15)
    assert got == 2000
    db.close()


def test_no_time_limit_when_none(db_target: str) -> None:
    open_store(db_target).close()
    db = open_readonly(db_target, time_limit_s=None)
    if db.postgres:
        assert db.all("SHOW statement_timeout") == [("0",)]
    assert db.all("SELECT 2") == [(2,)]
    db.close()


def test_query_runs_sql_with_markers_and_percent_as_given(db_target: str) -> None:
    open_store(db_target).close()
    out = ktriage("query", "--db", db_target, "--format", "jsonl", "SELECT '?' AS q, '100%' AS p, '%s' AS s")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"q": "?", "p": "100%", "s": "%s"}


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_query_time_limit_must_be_a_number_of_seconds(tmp_path, value: str) -> None:
    out = ktriage("query", "--db", str(tmp_path / "none.db"), "--time-limit", value, "SELECT 1")
    assert out.returncode == 2 and "--time-limit" in out.stderr and value in out.stderr
