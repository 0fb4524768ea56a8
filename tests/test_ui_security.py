"""The triage UI as a web page or a stranger on the host would attack it: SQL
that touches the filesystem, DNS rebinding, requests without the per-start
token, single SQL calls that eat seconds and gigabytes, values JSON cannot
hold, and a database on read-only media. Each runs against a real `ktriage ui`
process on a real SQLite file (and a real PostgreSQL server)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ktriage, tmpfs
from uiserver import UiServer, is_error_shape

ROWS = 2000


def _events(count: int, start: int = 0) -> list[dict]:
    out: list[dict] = []
    for i in range(start, start + count):
        out.append({"family": "process", "ts": 1_700_000_000_000_000_000 + i, "host": "h1", "source": "test",
                    "seq": 2 * i, "pid": 1000 + i % 50, "ppid": 1, "action": "exec", "image": f"/usr/bin/p{i % 7}",
                    "cmdline": f"p{i % 7} --arg {i}"})
        out.append({"family": "detection", "ts": 1_700_000_000_000_000_000 + i, "host": "h1", "source": "test",
                    "seq": 2 * i + 1, "pid": 1000 + i % 50, "name": f"RULE_{i % 3}", "severity": 1 + i % 8,
                    "actor_pid": 1000 + i % 50, "reason": "test", "event_ids": "[]", "evidence": "[]"})
    return out


def make_db(path: Path, count: int = ROWS) -> Path:
    from ktriage.store.sqlite import SqliteStore

    store = SqliteStore(path)
    store.insert(_events(count))
    store.close()
    return path


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_db(tmp_path_factory.mktemp("uisec") / "small.db")


@pytest.fixture(scope="module")
def ui(db: Path) -> Iterator[UiServer]:
    server = UiServer(str(db))
    yield server
    server.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))).hexdigest()


# 1. SQL that would touch the filesystem ------------------------------------------------------------------------

WRITES = (
    "ATTACH DATABASE '{dir}/attached.db' AS a",
    "VACUUM INTO '{dir}/vacuumed.db'",
    "VACUUM",
    "DETACH DATABASE main",
    "PRAGMA query_only = 0",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA writable_schema = 1",
    "PRAGMA temp_store_directory = '{dir}'",
    "PRAGMA main.user_version = 7",
    "PRAGMA wal_checkpoint(TRUNCATE)",
    "SELECT load_extension('{dir}/evil.so')",
    "SELECT fts3_tokenizer('simple')",
    "CREATE TEMP TABLE t AS SELECT 1",
    "CREATE TEMP VIEW v AS SELECT 1",
    "CREATE TABLE x(a)",
    "DELETE FROM detection",
    "INSERT INTO detection (name) VALUES ('x')",
    "ANALYZE",
    "REINDEX",
    "BEGIN IMMEDIATE",
    "SAVEPOINT s",
    "SELECT * FROM temp.sqlite_master",
)


def test_sql_that_writes_or_attaches_is_refused_and_creates_no_file(ui: UiServer, db: Path, tmp_path: Path) -> None:
    before = _digest(db)
    for template in WRITES:
        query = template.format(dir=tmp_path)
        status, body = ui.sql(query)
        assert status in (400, 403) and is_error_shape(body), (query, status, body)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "the SQL box created files"
    assert _digest(db) == before, "the database (or its -wal) changed"


def test_read_only_pragmas_and_reads_still_work(ui: UiServer) -> None:
    for query in ("PRAGMA table_info(detection)", "PRAGMA index_list(process)", "PRAGMA user_version",
                  "PRAGMA page_count", "SELECT name FROM sqlite_master WHERE type = 'table'",
                  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) SELECT sum(x) FROM c",
                  "SELECT printf('%x', 255), hex(zeroblob(4)), json_array(1, 2)"):
        status, body = ui.sql(query)
        assert status == 200 and body["ok"] and body["result"]["columns"], (query, body)
    status, body = ui.sql("SELECT printf('%x|%5.2f|%s', 255, 3.14159, 'a')")
    assert body["result"]["rows"] == [["ff| 3.14|a"]]


@pytest.mark.parametrize("defence", ["none", "authorizer", "attach_limit"])
def test_which_defence_stops_vacuum_into_creating_its_file(defence: str, db: Path, tmp_path: Path) -> None:
    """Measured, not assumed: mode=ro and query_only do not stop VACUUM INTO creating its target (SQLite
    creates it, then fails to write); the authorizer (it is asked about VACUUM's internal ATTACH) does,
    and so does SQLITE_LIMIT_ATTACHED = 0. ktriage sets both."""
    from ktriage.store import sqlguard

    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    conn.execute("PRAGMA query_only = 1")
    if defence == "authorizer":
        conn.set_authorizer(sqlguard.authorize)
    if defence == "attach_limit":
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    target = tmp_path / "into.db"
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute(f"VACUUM INTO '{target}'")
    conn.close()
    assert target.exists() == (defence == "none")


# 2. DNS rebinding ----------------------------------------------------------------------------------------------

def test_foreign_host_or_origin_is_refused(ui: UiServer) -> None:
    for headers in ({"Host": f"evil.example:{ui.port}"}, {"Host": "evil.example"}, {"Host": "127.0.0.1"},
                    {"Host": f"127.0.0.1:{ui.port + 1}"}, {"Host": f"[::1]:{ui.port}"},
                    {"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": f"http://evil.example:{ui.port}"}, {"Origin": f"https://127.0.0.1:{ui.port}"}):
        for path in ("/api/sql?q=select%201", "/api/meta", "/"):
            status, body = ui.get(path, headers=headers)
            assert status == 403 and is_error_shape(body, "forbidden_host"), (headers, path, status, body)
    for headers in ({"Host": f"127.0.0.1:{ui.port}"}, {"Host": f"localhost:{ui.port}"},
                    {"Origin": f"http://127.0.0.1:{ui.port}"}, {"Origin": f"http://localhost:{ui.port}"}):
        status, body = ui.get("/api/meta", headers=headers)
        assert status == 200 and body["ok"], headers


# 3. The per-start token ----------------------------------------------------------------------------------------

def test_the_printed_url_carries_a_fresh_token(ui: UiServer, db: Path) -> None:
    assert ui.url.startswith(f"http://127.0.0.1:{ui.port}/?token=") and len(ui.token or "") >= 32
    other = UiServer(str(db))
    try:
        assert other.token != ui.token
    finally:
        other.close()


def test_every_api_call_needs_the_token_header(ui: UiServer) -> None:
    token = ui.token or "x"
    for path, headers in (("/api/meta", {}), ("/api/sql?q=select%201", {}),
                          ("/api/meta", {"X-Ktriage-Token": token[:-1]}),
                          ("/api/meta", {"X-Ktriage-Token": ""}),
                          (f"/api/meta?token={token}", {}),
                          ("/api/meta", {"Cookie": f"token={token}; X-Ktriage-Token={token}"}),
                          ("/api/meta", {"Authorization": f"Bearer {token}"})):
        status, body = ui.get(path, headers=headers, token=False)
        assert status == 401 and is_error_shape(body, "unauthorized"), (path, headers, status, body)
    status, body = ui.get("/api/meta")
    assert status == 200 and body["ok"]


def test_the_page_itself_needs_no_token_and_holds_no_data(ui: UiServer) -> None:
    status, page, headers = ui.request("/", token=False)
    assert status == 200 and "<main id=\"app\">" in page and "RULE_" not in page
    assert headers.get("referrer-policy") == "no-referrer"
    assert "frame-ancestors 'none'" in headers.get("content-security-policy", "")


def test_a_cross_origin_preflight_is_refused(ui: UiServer) -> None:
    status, body, headers = ui.request("/api/sql?q=select%201", method="OPTIONS", token=False, headers={
        "Origin": f"http://127.0.0.1:{ui.port}", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-ktriage-token"})
    assert status in (401, 405) and is_error_shape(body)
    assert not [h for h in headers if h.startswith("access-control-")]


def test_no_method_but_get_is_served(ui: UiServer) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/api/sql?q=select%201", "/api/meta", "/"):
            status, body, _ = ui.request(path, method=method)
            assert status == 405 and is_error_shape(body, "method_not_allowed"), (method, path, status, body)


# 4. Resource exhaustion by one GET -----------------------------------------------------------------------------

def _timed(ui: UiServer, query: str) -> tuple[float, int, int, dict]:
    rss_before = ui.peak_rss_kb()
    started = time.monotonic()
    status, body = ui.sql(query, timeout=15)
    return time.monotonic() - started, ui.peak_rss_kb() - rss_before, status, body


def _bounded(ui: UiServer, query: str, seconds: float, rss_kb: int = 64_000) -> tuple[int, dict]:
    """Run query; assert it ended within seconds and grew the UI's peak RSS by less than rss_kb."""
    elapsed, grown_kb, status, body = _timed(ui, query)
    assert elapsed < seconds, f"{query}: {elapsed:.1f} s"
    assert grown_kb < rss_kb, f"{query}: peak RSS grew {grown_kb} kB"
    return status, body


@pytest.mark.parametrize("query, words", [
    ("select length(printf('%.*c', 900000000, 'x'))", "limit"),
    ("select length(printf('%.*c%.*c%.*c', 900000000, 'x', 900000000, 'y', 900000000, 'z'))", "limit"),
    ("select length(format('%900000000d', 1))", "limit"),
    ("select length(zeroblob(900000000))", "too big"),
    ("select length(randomblob(900000000))", "too big"),
    ("select length(replace(replace(replace(printf('%.*c', 400000, 'x'), 'x', 'xxxxxxxxxx'), 'x', 'xxxxxxxxxx'),"
     " 'x', 'xxxxxxxxxx'))", "too big"),
    ("with recursive c(x) as (select 1 union all select x + 1 from c where x < 1000) "
     "select length(group_concat(printf('%.*c', 1000, 'x'))) from c", "too big"),
    ("with recursive c(x) as (select 'x' union all select x || x from c) select length(x) from c", "too big"),
])
def test_one_long_function_call_ends_at_once_with_a_clear_error(ui: UiServer, query: str, words: str) -> None:
    """Before: printf('%.*c', 900000000, 'x') ran 9 s here (28 s in the issue) and took the UI's peak RSS
    from 46 MB to 904 MB, far past the 3 s limit; three such calls in one printf, 16 s."""
    status, body = _bounded(ui, query, 2.0)
    assert status == 400 and is_error_shape(body, "query_failed") and words in body["error"]["message"], body


@pytest.mark.parametrize("query", [
    "with recursive c(x) as (select 1 union select x + 1 from c) select count(*) from c",
    "with recursive c(x) as (select 1 union all select x + 1 from c) select x from c order by random() limit 1",
    "select count(*) from process a, process b, process c",
    "with recursive c(x) as (select 1 union all select x + 1 from c) select length(group_concat(printf('%.*c', "
    "1000, 'x'))) from c",
])
def test_long_queries_stop_at_the_time_limit(ui: UiServer, query: str) -> None:
    status, body = _bounded(ui, query, 5.0)
    assert status == 400 and is_error_shape(body, "query_failed") and "time limit" in body["error"]["message"]


@pytest.mark.parametrize("query", [
    "select instr(printf('%.*c', 524000, 'a'), printf('%.*c', 262000, 'a') || 'b')",
    "select length(replace(printf('%.*c', 524000, 'a'), printf('%.*c', 262000, 'a') || 'b', ''))",
    "select printf('%.*c', 524000, 'a') like '%' || printf('%.*c', 990, 'a') || 'b%'",
    "select printf('%.*c', 524000, 'a') like '%' || printf('%.*c', 40000, 'a') || 'b%'",
    "select printf('%.*c', 524000, 'a') glob '*' || printf('%.*c', 990, 'a') || 'b*'",
    "select printf('%.*c', 524000, 'a') like replace(printf('%.*c', 490, 'x'), 'x', '%a') || 'b'",
])
def test_one_quadratic_call_is_bounded_by_the_value_and_pattern_limits(ui: UiServer, query: str) -> None:
    """Before: LIKE with a 40 000-character pattern on a 500 KB string ran 30 s in one uninterruptible call."""
    status, body = _bounded(ui, query, 4.0)
    assert (status == 200 and body["ok"]) or (status == 400 and is_error_shape(body, "query_failed")), body


def test_a_huge_result_is_cut_by_rows_and_by_bytes(ui: UiServer) -> None:
    """Before: 1000 rows of 500 KB each took 10 s and a 500 MB reply."""
    status, body = _bounded(ui, "select * from process a, process b limit 1000000000000", 3.0)
    result = body["result"]
    assert status == 200 and result["truncated"] == "rows" and len(result["rows"]) == result["row_limit"] == 1000
    status, body = _bounded(ui, "select printf('%.*c', 500000, 'x') from process a, process b limit 1000000", 3.0,
                            128_000)
    result = body["result"]
    assert status == 200 and result["truncated"] == "bytes", {k: v for k, v in result.items() if k != "rows"}
    assert sum(len(r[0]) for r in result["rows"]) <= result["byte_limit"] <= 8 << 20


# 5. One error shape, values JSON cannot hold ---------------------------------------------------------------------

def test_blobs_and_infinite_floats_come_back_marked(ui: UiServer) -> None:
    status, body = ui.sql("select x'00ff10', 1e999, -1e999, 1.5, 'text', 7, null")
    assert status == 200, body
    assert body["result"]["rows"] == [[{"$type": "blob", "value": "00ff10"}, {"$type": "float", "value": "inf"},
                                       {"$type": "float", "value": "-inf"}, 1.5, "text", 7, None]]


@pytest.mark.parametrize("path, status, code", [
    ("/api/nope", 404, "not_found"),
    ("/nope.html", 404, "not_found"),
    ("/api/process", 400, "bad_parameter"),
    ("/api/process?pid=abc", 400, "bad_parameter"),
    ("/api/process?pid=99999999999999999999999", 400, "bad_parameter"),
    ("/api/detections?since=99999999999999999999999", 400, "bad_parameter"),
    ("/api/detections?limit=-1", 400, "bad_parameter"),
    ("/api/detections?limit=0", 400, "bad_parameter"),
    ("/api/detections?min_severity=1e3", 400, "bad_parameter"),
    ("/api/sql", 400, "bad_parameter"),
    ("/api/sql?q=select%201%00", 400, "bad_parameter"),
    ("/api/sql?q=select%201;%20select%202", 400, "query_failed"),
    ("/api/sql?q=" + "x" * 200_000, 400, "bad_parameter"),
    ("/api/search?q=a", 400, "bad_parameter"),
    ("/api/search?q=" + "a" * 1000, 400, "bad_parameter"),
    ("/api/event?id=" + urllib.parse.quote("process/x#1"), 404, "not_found"),
    ("/api/detection?id=%ff%fe", 404, "not_found"),
])
def test_bad_requests_get_the_one_error_shape(ui: UiServer, path: str, status: int, code: str) -> None:
    got, body = ui.get(path)
    assert got == status and is_error_shape(body, code), (path, got, body)


def test_seeded_fuzz_of_parameters_never_gives_a_500_or_another_shape(ui: UiServer) -> None:
    import random

    rng = random.Random(13)
    values = ["", "0", "-1", "1e9", "9" * 30, "abc", "%00", "%ff", "'", "\"", ";", "%", "_", "null", "[]", "{}",
              "process/test#2", "detection/test#1", "a" * 300, "..%2f..%2fetc%2fpasswd", "%e2%80%ae", "%ed%a0%80"]
    names = ["pid", "host", "id", "q", "limit", "since", "until", "min_severity", "name"]
    endpoints = ["detections", "detection", "event", "process", "search", "sql", "meta"]
    for _ in range(300):
        query = "&".join(f"{rng.choice(names)}={rng.choice(values)}" for _ in range(rng.randint(0, 3)))
        path = f"/api/{rng.choice(endpoints)}?{query}"
        status, body = ui.get(path)
        assert status in (200, 400, 404), (path, status, body)
        assert (status == 200 and body["ok"] is True) or is_error_shape(body), (path, body)
    assert "Traceback" not in ui.stderr


def test_an_unexpected_exception_is_a_logged_500_with_the_error_shape(db: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The catch-all, driven through the real Starlette app: an endpoint whose code has a bug."""
    import asyncio

    from ktriage.ui import api

    class Broken(api.Api):
        def meta(self, request: object) -> object:
            return {}["no such key"]

    app = api.create_app(str(db), token="t", port=8780, api=Broken(str(db)))
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/api/meta", "raw_path": b"/api/meta", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1:8780"), (b"x-ktriage-token", b"t")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8780)}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    assert status == 500 and is_error_shape(body, "internal_error")
    assert "Traceback" in caplog.text and "no such key" in caplog.text


# 6. Read-only media ----------------------------------------------------------------------------------------------

CRASH_WRITER = """
import os, sys
sys.path.insert(0, {tests!r})
from test_ui_security import _events
from ktriage.store.sqlite import SqliteStore
store = SqliteStore({path!r})
store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
store.insert(_events(5, start=10_000))   # these stay in the -wal: the process dies without closing
os._exit(0)
"""


def _layout(directory: Path, name: str, wal: bool, shm: bool) -> Path:
    path = make_db(directory / name, count=20)
    if wal:
        subprocess.run([sys.executable, "-c", CRASH_WRITER.format(tests=str(Path(__file__).parent), path=str(path))],
                       check=True, timeout=60)
        assert Path(f"{path}-wal").stat().st_size > 0
        if not shm:
            Path(f"{path}-shm").unlink()
    return path


@pytest.fixture
def ro_mount(root: None, tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "evidence", "64m") as mnt:
        yield mnt


LAYOUTS = {"checkpointed": (False, False, 20), "wal_and_shm": (True, True, 25), "wal_only": (True, False, 25)}


def test_databases_on_read_only_media_open_with_every_row(ro_mount: Path) -> None:
    paths = {name: _layout(ro_mount, f"{name}.db", wal, shm) for name, (wal, shm, _) in LAYOUTS.items()}
    subprocess.run(["mount", "-o", "remount,ro", str(ro_mount)], check=True)
    assert not os.access(ro_mount, os.W_OK)
    for name, (_, _, expected) in LAYOUTS.items():
        db = str(paths[name])
        out = ktriage("query", "--db", db, "--format", "jsonl", "SELECT count(*) AS n FROM detection")
        assert out.returncode == 0 and json.loads(out.stdout)["n"] == expected, (name, out.stderr)
        assert out.stderr.count("read-only") == (name != "wal_and_shm"), (name, out.stderr)
        out = ktriage("detections", "--db", db, "--format", "jsonl")
        assert out.returncode == 0 and len(out.stdout.splitlines()) == expected, (name, out.stderr)
        server = UiServer(db)
        try:
            for _ in range(3):
                status, body = server.get("/api/meta")
                assert status == 200 and body["result"]["counts"]["detection"] == expected, (name, body)
            status, body = server.sql("select count(*) from process")
            assert status == 200 and body["result"]["rows"] == [[expected]], (name, body)
        finally:
            server.close()
        assert server.stderr.count("read-only") == (name != "wal_and_shm"), (name, server.stderr)


# PostgreSQL: the SQL box on the server the suite starts ---------------------------------------------------------

READER = "ktriage_ui_reader"


@pytest.fixture(scope="module")
def pg_db(pg: object) -> str:
    import psycopg

    from ktriage.store.postgres import PostgresStore

    url = pg.new_database()
    store = PostgresStore(url)
    store.insert(_events(50))
    store.close()
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f"DROP ROLE IF EXISTS {READER}")  # roles are per cluster: a rerun in one cluster
        con.execute(f"CREATE ROLE {READER} LOGIN")
        con.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER}")
    return url


def _as_reader(url: str) -> str:
    return url.replace("//postgres@", f"//{READER}@", 1)


def test_a_superuser_connection_gets_no_sql_box(pg_db: str, tmp_path: Path) -> None:
    """Before: COPY … TO '/file' and pg_read_file('/etc/passwd') ran as the server's superuser."""
    target = tmp_path / "copied"
    os.chmod(tmp_path, 0o777)
    server = UiServer(pg_db)
    try:
        for query in (f"COPY (SELECT 1) TO '{target}'", "SELECT pg_read_file('/etc/passwd')", "SELECT 1"):
            status, body = server.sql(query)
            assert status == 403 and is_error_shape(body, "sql_disabled") and "superuser" in body["error"]["message"]
        status, body = server.get("/api/meta")
        assert status == 200 and body["result"]["counts"]["detection"] == 50, "the rest of the UI works"
    finally:
        server.close()
    assert not target.exists()
    assert "superuser" in server.stderr


def test_a_plain_role_cannot_touch_the_servers_files_or_write(pg_db: str, tmp_path: Path) -> None:
    import psycopg

    os.chmod(tmp_path, 0o777)
    target = tmp_path / "out"
    server = UiServer(_as_reader(pg_db))
    try:
        refused = (f"COPY (SELECT 1) TO '{target}'", "COPY detection TO STDOUT",
                   f"COPY (SELECT 1) TO PROGRAM 'touch {target}'", "SELECT pg_read_file('/etc/passwd')",
                   "SELECT pg_ls_dir('/')", f"SELECT lo_export(1, '{target}')", "SELECT lo_import('/etc/passwd')",
                   "SELECT 1; DELETE FROM detection", "SET default_transaction_read_only = off",
                   "DELETE FROM detection", "WITH d AS (DELETE FROM detection RETURNING 1) SELECT count(*) FROM d",
                   "SELECT set_config('default_transaction_read_only', 'off', false)",
                   "CREATE EXTENSION dblink", "SELECT dblink_exec('dbname=postgres', 'DROP TABLE detection')")
        for query in refused:
            status, body = server.sql(query)
            if status == 200:  # only a SELECT whose call did nothing may pass
                assert query.startswith("SELECT set_config"), (query, body)
            else:
                assert status == 400 and is_error_shape(body, "query_failed"), (query, status, body)
        started = time.monotonic()
        status, body = server.sql("SELECT set_config('statement_timeout', '0', false), pg_sleep(30)")
        assert status == 400 and "time limit" in body["error"]["message"] and time.monotonic() - started < 6
        # Before: 3 million rows were all fetched into the UI (its peak RSS 46 MB -> 758 MB) before the limit.
        status, body = _bounded(server, "SELECT g, '\\x00ff'::bytea, 'NaN'::float8, 'Infinity'::float8, 1.5::numeric, "
                                "'2024-01-02'::date FROM (SELECT generate_series(1, 100000000) AS g) AS s", 3.0)
        assert status == 200, body
        result = body["result"]
        assert status == 200 and result["truncated"] == "rows" and len(result["rows"]) == 1000
        assert result["rows"][0] == [1, {"$type": "blob", "value": "00ff"}, {"$type": "float", "value": "nan"},
                                     {"$type": "float", "value": "inf"}, {"$type": "Decimal", "value": "1.5"},
                                     {"$type": "date", "value": "2024-01-02"}]
        status, body = server.sql("SELECT count(*) FROM detection")
        assert status == 200 and body["result"]["rows"] == [[50]]
    finally:
        server.close()
    assert not target.exists()
    with psycopg.connect(pg_db) as con:
        assert con.execute("SELECT count(*) FROM detection").fetchone()[0] == 50
        assert con.execute("SELECT current_setting('default_transaction_read_only')").fetchone()[0] == "off"
