"""The broker against a real running `ktriage serve` (root, real sensor)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ktriage.broker.protocol import encode, read_frame
from ktriage.client import BrokerError, Client

pytestmark = pytest.mark.root

# a process that waits for a line, then makes a child that makes a grandchild
TREE = ("import subprocess, sys\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "subprocess.run(['/bin/sh', '-c', '/bin/sh -c \"/bin/true grandchild\"; exit 3'])\n")
BURST = ("import os, sys\n"
         "print('ready', flush=True)\n"
         "sys.stdin.readline()\n"
         "for _ in range(5000):\n"
         "    os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600))\n")


@pytest.fixture(scope="module")
def broker(root: None, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("broker")
    public = Path(tempfile.mkdtemp(prefix="ktriage-broker-"))  # traversable by others: the refusal must come
    public.chmod(0o755)                                          # from the credential check, not the filesystem
    sock, token = str(public / "broker.sock"), tmp / "token"
    proc = subprocess.Popen([sys.executable, "-m", "ktriage", "serve", "--socket", sock, "--http",
                             "127.0.0.1:18766", "--token-file", str(token), "--queue", "256"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "broker serving on" in line, line + proc.stderr.read()
    yield {"socket": sock, "token": token.read_text().strip(), "proc": proc, "tmp": tmp}
    proc.terminate()
    proc.wait(timeout=30)


def _held(script: str, *args: str) -> subprocess.Popen:
    """A python process waiting for a line on stdin, its start-up done (so every subscriber sees the same)."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _drain(client: Client, until_exit_of: int, timeout: float = 15) -> list:
    got, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += client.get_events(timeout=0.5, max=1000)
        if any(r.family == "process" and r.data.get("action") == "exit" and r.data["pid"] == until_exit_of
               for r in got):
            while more := client.get_events(timeout=1.0, max=1000):  # until quiet: late records included
                got += more
            return got
    return got


def _key(r) -> tuple:
    return r.data["family"], r.data["source"], r.data["seq"]


def test_three_clients_each_get_every_event_and_a_fourth_none(broker) -> None:
    target, other = _held(TREE), _held(TREE)
    clients = [Client(broker["socket"]) for _ in range(3)]
    elsewhere = Client(broker["socket"])
    for c in clients:
        c.subscribe(target.pid)
    elsewhere.subscribe(other.pid)
    target.communicate("go\n", timeout=30)
    seen = [_drain(c, target.pid) for c in clients]
    assert seen[0] and all({_key(r) for r in s} == {_key(r) for r in seen[0]} for s in seen)
    assert all(len(s) == len({_key(r) for r in s}) for s in seen), "each event delivered once per client"
    execs = [r.data for r in seen[0] if r.family == "process" and r.data.get("action") == "exec"]
    assert any(e["cmdline"] == "/bin/true grandchild" for e in execs), "children two hops down are followed"
    assert [r.seq for r in seen[0]] == list(range(seen[0][0].seq, seen[0][0].seq + len(seen[0])))
    tree = {target.pid} | {r.data["child_pid"] for r in seen[0] if r.data.get("action") == "fork"}
    assert [r for r in elsewhere.get_events(timeout=0.5, max=1000) if r.data["pid"] in tree] == []
    other.communicate("\n", timeout=30)
    for c in (*clients, elsewhere):
        c.close()


def test_a_stalled_client_drops_and_the_others_do_not(broker, tmp_path) -> None:
    target = _held(BURST, str(tmp_path / "f"))
    stalled, reader = Client(broker["socket"]), Client(broker["socket"])
    stalled.subscribe(target.pid, streams=["file", "process"])
    reader.subscribe(target.pid, streams=["file", "process"], queue=8192)
    target.stdin.write("go\n")
    target.stdin.flush()
    got, deadline = [], time.monotonic() + 30
    while target.poll() is None or len(got) < 5001:
        got += reader.get_events(timeout=0.2, max=1000)
        if time.monotonic() > deadline:
            break
    files = [r for r in got if r.family == "file"]
    assert len(files) == 5000, "the reading client got every event"
    mine = stalled.stats()["client"]
    assert mine["dropped"] >= 5000 - 256 and mine["queue_depth"] == 256
    assert mine["seq"] == mine["queue_depth"] + mine["dropped"], "every drop is counted"
    queued = stalled.get_events(timeout=0.5, max=1000)
    assert [r.seq for r in queued] == list(range(1, 257)), "the oldest are kept, in order"
    stalled.close()
    reader.close()


def test_unsubscribe_cleans_up_the_followed_tree(broker) -> None:
    target = _held("import sys, time\nprint('ready', flush=True)\nsys.stdin.readline()\nimport subprocess\n"
                   "p = subprocess.Popen(['/bin/sh', '-c', 'sleep 30'])\ntime.sleep(30)\n")
    c = Client(broker["socket"])
    c.subscribe(target.pid, depth=2)
    target.stdin.write("go\n")
    target.stdin.flush()
    deadline = time.monotonic() + 10
    while c.stats()["client"]["members"] < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert c.stats()["client"]["members"] >= 3, "root, child and grandchild"
    assert c.unsubscribe(target.pid)["removed"] >= 3
    stats = c.stats()["client"]
    assert (stats["subscriptions"], stats["members"]) == (0, 0)
    c.get_events(timeout=0.3, max=1000)
    target.kill()
    target.wait()
    assert c.get_events(timeout=1.0, max=1000) == [], "nothing from the tree after unsubscribe"
    c.close()


def test_non_root_is_refused(broker) -> None:
    code = ("import os, socket, sys\nfrom ktriage.broker.protocol import read_frame, encode\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
            "print(read_frame(s)['error']['code'])\n")
    os.chmod(broker["socket"], 0o666)  # let nobody reach the socket, so the credential check is what refuses
    out = subprocess.run([sys.executable, "-c", code, broker["socket"]], capture_output=True, text=True, timeout=30)
    os.chmod(broker["socket"], 0o660)
    assert out.stdout.strip() == "forbidden", out.stderr


def test_malformed_frames_and_unknown_verbs_get_typed_errors(broker) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.connect(broker["socket"])
    body = b"{not json"
    s.sendall(len(body).to_bytes(4, "big") + body)
    assert read_frame(s)["error"]["code"] == "bad_frame"
    s.sendall(encode({"id": 7, "verb": "launch_missiles"}))
    reply = read_frame(s)
    assert (reply["id"], reply["error"]["code"]) == (7, "unknown_verb")
    s.sendall(encode({"id": 8, "verb": "subscribe", "args": {"pid": os.getpid(), "streams": "bogus"}}))
    reply = read_frame(s)["error"]
    assert reply["code"] == "bad_args" and "streams" in reply["message"] and "bogus" in reply["message"]
    s.sendall(encode({"id": 9, "verb": "hello"}))
    assert read_frame(s)["result"]["protocol"] == 1, "still serving on the same connection"
    s.close()
    with Client(broker["socket"]) as c:
        with pytest.raises(BrokerError, match="no_such_process"):
            c.subscribe(4_000_000)
        assert c.query_image(broker["proc"].pid).endswith("python3.11") or "python" in c.query_image(
            broker["proc"].pid)


def _http(path: str, token: str | None, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:18766{path}", method="POST" if body is not None else "GET",
                                 data=json.dumps(body).encode() if body is not None else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_http_api_needs_the_token_and_has_one_error_shape(broker) -> None:
    for token in (None, "wrong"):
        status, body = _http("/v1/stats", token, {})
        assert status == 401 and body == {"id": None, "ok": False,
                                          "error": {"code": "unauthorized", "message": "missing or wrong bearer token"}}
    status, body = _http("/v1/stats", broker["token"], {})
    assert status == 200 and body["ok"] and "stages" in body["result"]
    status, body = _http("/v1/shutdown", broker["token"], {})
    assert status == 400 and body["error"]["code"] == "forbidden", "HTTP clients cannot stop the broker"
    assert broker["proc"].poll() is None


def test_async_sdk_subscribes_and_receives(broker) -> None:
    import asyncio

    from ktriage.client import AsyncClient

    target = _held(TREE)

    async def scenario() -> list:
        client = await AsyncClient.open(broker["socket"])
        await client.subscribe(target.pid, streams=["process"])
        target.stdin.write("go\n")
        target.stdin.flush()
        got = []
        async for record in client.events():
            got.append(record)
            if record.data.get("action") == "exit" and record.data["pid"] == target.pid:
                break
        stats = await client.stats()
        await client.close()
        return got, stats

    got, stats = asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    target.wait()
    assert {r.family for r in got} == {"process"} and stats["client"]["delivered"] >= len(got)
    assert any(r.data.get("cmdline") == "/bin/true grandchild" for r in got)


def test_a_verb_that_fails_inside_the_broker_answers_in_the_error_shape(caplog: pytest.LogCaptureFixture) -> None:
    from ktriage.broker.server import Broker

    broker = Broker(socket_path=str(Path(tempfile.mkdtemp()) / "unused.sock"))  # never started: no sensor yet
    client = broker.new_client(0)
    reply = broker.handle(client, {"id": 3, "verb": "stats"})
    assert reply["id"] == 3 and reply["ok"] is False and reply["error"]["code"] == "internal", reply
    assert "stats failed" in caplog.text, "and the traceback is logged"
    assert broker.handle(client, {"id": 4, "verb": "hello"})["ok"], "the client goes on"


def _loaded_by(statement: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"{statement}; import sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_the_sdk_and_the_cli_load_no_layer_they_do_not_use() -> None:
    sdk = _loaded_by("import ktriage.client")
    assert "ktriage.broker.client" in sdk and "ktriage.broker.server" not in sdk
    heavy = [m for m in sdk if m.startswith(("ktriage.sensor", "ktriage.store", "ktriage.broker.server", "yaml",
                                             "psycopg"))]
    assert heavy == [], "the SDK imports only the protocol"
    assert [m for m in _loaded_by("import ktriage.cli") if m.startswith("ktriage.sensor")] == []


def test_serve_with_a_database_writes_its_run_and_counters(root: None, tmp_path: Path) -> None:
    import sqlite3

    db, sock = tmp_path / "serve.db", str(tmp_path / "b.sock")
    proc = subprocess.Popen([sys.executable, "-m", "ktriage", "serve", "--socket", sock, "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "broker serving on" in proc.stdout.readline(), proc.stderr.read()
        target = _held("import sys\nprint('ready', flush=True)\nsys.stdin.readline()\nopen(sys.argv[1], 'w').close()\n",
                       str(tmp_path / "written"))
        with Client(sock) as c:
            c.subscribe(target.pid, streams=["file", "process"])
            target.stdin.write("go\n")
            target.stdin.flush()
            target.wait(timeout=30)
            _drain(c, target.pid)
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    con = sqlite3.connect(db)
    (run_id, ended), = con.execute("SELECT id, ended FROM runs").fetchall()
    assert ended is not None, "the run has its end"
    stats = {(stage, family, counter): value for stage, family, counter, value in
             con.execute("SELECT stage, family, counter, value FROM stats WHERE run_id = ?", (run_id,))}
    stored = con.execute("SELECT count(*) FROM file").fetchone()[0]
    assert stats[("store", "", "written")] >= stored >= 1 and ("queue", "clients", "dropped") in stats
    sent = sum(v for (stage, _f, counter), v in stats.items() if (stage, counter) == ("bpf", "sent"))
    lost = sum(v for (stage, _f, counter), v in stats.items() if (stage, counter) == ("bpf", "lost"))
    received = sum(v for (stage, _f, counter), v in stats.items() if (stage, counter) == ("decode", "received"))
    assert sent - received == lost, stats
