"""The broker under attack (issue 13): token files, argument types, nesting,
frame and body lengths, connection floods, slow senders, gone clients, a
5,000-pid set_pids and DNS rebinding — each against a real `ktriage serve`."""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from brokerproc import Serve, free_port, is_error_shape, is_result_shape, parse_response, read_all
from ktriage.broker.protocol import MAX_FRAME, encode, read_frame
from ktriage.errors import KtriageError

pytestmark = pytest.mark.root

TOKEN = "k3Yq9-TzP0wLm2Xc7Rv5Ns8Hd1Bf4Gj6Qa0Ue3Wi"


@pytest.fixture(scope="module")
def tmp(root: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("brokersec")


@pytest.fixture(scope="module")
def broker(tmp: Path) -> Iterator[Serve]:
    """The default broker, started with a pre-existing good token file (mode 0600, root's)."""
    token = tmp / "good-token"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, TOKEN.encode() + b"\n")
    os.close(fd)
    serve = Serve(tmp, token_file=token)
    yield serve
    serve.stop()
    assert serve.tracebacks() == 0, serve.stderr_text()[-3000:]


@pytest.fixture(scope="module")
def spare(tmp: Path) -> Iterator[Serve]:
    """A broker for the fuzz and the floods, so they cannot disturb the other tests."""
    serve = Serve(tmp)
    yield serve
    serve.stop()


@pytest.fixture(scope="module")
def short_idle(tmp: Path) -> Iterator[Serve]:
    serve = Serve(tmp, "--idle-timeout", "2")
    yield serve
    serve.stop()


@pytest.fixture(scope="module")
def sleeper() -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(["sleep", "900"])
    yield proc
    proc.kill()
    proc.wait()


def _sleepers(n: int) -> list[int]:
    return [os.posix_spawn("/bin/sleep", ["sleep", "900"], os.environ) for _ in range(n)]


def _reap(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        os.waitpid(pid, 0)


def _until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


# -- 1. token files ----------------------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.write_bytes(data)
    path.chmod(mode)


TOKEN_FILES = {
    "empty": (lambda p: _write(p, b""), "empty"),
    "blank line": (lambda p: _write(p, b"\n"), "empty"),
    "short": (lambda p: _write(p, b"abc123\n"), "shorter than"),
    "predictable": (lambda p: _write(p, b"a" * 64 + b"\n"), "predictable"),
    "not text": (lambda p: _write(p, bytes(range(128, 192))), "printable"),
    "two lines": (lambda p: _write(p, TOKEN.encode() + b"\nsecond line\n"), "printable"),
    "group and world readable": (lambda p: _write(p, TOKEN.encode(), 0o644), "mode 0644"),
    "group writable": (lambda p: _write(p, TOKEN.encode(), 0o620), "mode 0620"),
    "not root's": (lambda p: (_write(p, TOKEN.encode()), os.chown(p, 65534, 65534)), "owned by uid 65534"),
    "symlink": (lambda p: (_write(p.with_name("real"), TOKEN.encode()), p.symlink_to(p.with_name("real"))),
                "symlink"),
    "dangling symlink": (lambda p: p.symlink_to(p.with_name("made-by-the-broker")), "symlink"),
    "fifo": (lambda p: os.mkfifo(p, 0o600), "not a regular file"),
    "directory": (lambda p: p.mkdir(mode=0o700), "not a regular file"),
}


def _empty_bearer_status(port: int) -> int | None:
    request = (f"POST /v1/stats HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer \r\n"
               "Content-Length: 2\r\n\r\n{}").encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request)
            return parse_response(read_all(s))[0]
    except OSError:
        return None


def _serve_with_token(path: Path) -> tuple[int | None, str]:
    """Start serve with this token file: (exit code, stderr) when it exits within 60 s; when it serves
    instead, it is stopped and the outcome says what an empty bearer token got."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ktriage", "serve", "--socket", str(path.parent / "s.sock"),
                             "--http", f"127.0.0.1:{port}", "--token-file", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(60)
    if line and not line[0]:  # end of output: the process is exiting
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    if proc.poll() is None or (line and "serving" in line[0]):
        served = bool(line and "serving" in line[0])
        time.sleep(0.5)
        status = _empty_bearer_status(port) if served else None
        proc.kill()
        proc.wait()
        return None, f"{'served' if served else 'hung'}; 'Authorization: Bearer ' got {status}"
    return proc.returncode, proc.stderr.read()


@pytest.mark.parametrize("case", list(TOKEN_FILES))
def test_a_bad_token_file_is_refused_with_one_line_naming_it(case: str, root: None, tmp_path: Path) -> None:
    make, reason = TOKEN_FILES[case]
    path = tmp_path / "token"
    make(path)
    rc, err = _serve_with_token(path)
    assert rc == 2, f"{case}: {err.strip()[-500:]}"
    assert err.count("\n") == 1 and err.startswith(f"ktriage: error: --token-file {path}: ") and reason in err, err
    assert "Traceback" not in err
    assert not path.with_name("made-by-the-broker").exists(), "the broker wrote through a symlink"


def test_a_missing_token_file_is_created_0600_and_root_s(short_idle: Serve) -> None:
    st = os.lstat(short_idle.token_file)
    assert (oct(st.st_mode & 0o7777), st.st_uid, st.st_nlink) == ("0o600", 0, 1)
    assert len(short_idle.token) >= 32


def test_the_http_api_never_accepts_an_empty_or_short_token() -> None:
    from ktriage.broker.http import HttpApi

    for token in ("", "short"):
        with pytest.raises(KtriageError, match="token"):
            HttpApi("127.0.0.1", free_port(), token)


def test_an_empty_bearer_is_refused(broker: Serve) -> None:
    assert _empty_bearer_status(broker.port) == 401
    status, body = broker.http("POST", "/v1/stats", b"{}", token=False, headers={"Authorization": "Bearer"})
    assert status == 401 and is_error_shape(body)


# -- 2. arguments ------------------------------------------------------------------------------

ME = os.getpid()
BAD_ARGS = [
    ("subscribe", {}, "pid"),
    ("subscribe", {"pid": str(ME)}, "pid"),
    ("subscribe", {"pid": float(ME)}, "pid"),
    ("subscribe", {"pid": True}, "pid"),
    ("subscribe", {"pid": 2**64}, "pid"),
    ("subscribe", {"pid": -5}, "pid"),
    ("subscribe", {"pid": [ME]}, "pid"),
    ("subscribe", {"pid": {"pid": ME}}, "pid"),
    ("subscribe", {"pid": None}, "pid"),
    ("subscribe", {"pid": ME, "streams": 5}, "streams"),
    ("subscribe", {"pid": ME, "streams": [["process"]]}, "streams"),
    ("subscribe", {"pid": ME, "streams": {"process": True}}, "streams"),
    ("subscribe", {"pid": ME, "streams": []}, "streams"),
    ("subscribe", {"pid": ME, "streams": "bogus"}, "streams"),
    ("subscribe", {"pid": ME, "streams": "x" * 100_000}, "streams"),
    ("subscribe", {"pid": ME, "depth": "3"}, "depth"),
    ("subscribe", {"pid": ME, "depth": 2.5}, "depth"),
    ("subscribe", {"pid": ME, "depth": -1}, "depth"),
    ("subscribe", {"pid": ME, "depth": 10**30}, "depth"),
    ("subscribe", {"pid": ME, "ttl_s": "120"}, "ttl_s"),
    ("subscribe", {"pid": ME, "ttl_s": float("nan")}, "ttl_s"),
    ("subscribe", {"pid": ME, "ttl_s": float("inf")}, "ttl_s"),
    ("subscribe", {"pid": ME, "ttl_s": float("-inf")}, "ttl_s"),
    ("subscribe", {"pid": ME, "ttl_s": -1}, "ttl_s"),
    ("subscribe", {"pid": ME, "ttl_s": True}, "ttl_s"),
    ("subscribe", {"pid": ME, "ttl_s": [120]}, "ttl_s"),
    ("subscribe", {"pid": ME, "ttl_s": 1e300}, "ttl_s"),
    ("subscribe", {"pid": ME, "queue": 0}, "queue"),
    ("subscribe", {"pid": ME, "queue": 10**9}, "queue"),
    ("subscribe", {"pid": ME, "queue": "big"}, "queue"),
    ("subscribe", {"pid": ME, "bogus": 1}, "bogus"),
    ("unsubscribe", {"pid": "x"}, "pid"),
    ("unsubscribe", {"pid": ME, "all": True}, "all"),
    ("set_pids", {"pids": f"{ME}"}, "pids"),
    ("set_pids", {"pids": [ME, str(ME)]}, "pids"),
    ("set_pids", {"pids": [1.5]}, "pids"),
    ("set_pids", {"pids": [True]}, "pids"),
    ("set_pids", {"pids": [[ME]]}, "pids"),
    ("set_pids", {"pids": {str(ME): 1}}, "pids"),
    ("set_pids", {"pids": list(range(1, 8194))}, "pids"),
    ("set_pids", {"pids": [ME], "depth": "x"}, "depth"),
    ("set_pids", {}, "pids"),
    ("get_event", {"timeout": "1"}, "timeout"),
    ("get_event", {"timeout": float("nan")}, "timeout"),
    ("get_event", {"timeout": float("inf")}, "timeout"),
    ("get_event", {"timeout": -1}, "timeout"),
    ("get_event", {"timeout": 61}, "timeout"),
    ("get_event", {"timeout": True}, "timeout"),
    ("get_event", {"timeout": [1]}, "timeout"),
    ("get_event", {"timeout": 0, "max": 0.5}, "max"),
    ("get_event", {"timeout": 0, "max": "1"}, "max"),
    ("get_event", {"timeout": 0, "max": -1}, "max"),
    ("get_event", {"timeout": 0, "max": 2**70}, "max"),
    ("query_image", {"pid": "1"}, "pid"),
    ("query_image", {"pid": None}, "pid"),
    ("hello", {"x": 1}, "x"),
    ("stats", {"verbose": True}, "verbose"),
    ("stream", {"fast": True}, "fast"),
    ("shutdown", {"now": True}, "now"),  # checked before it acts: the broker must still be up after
]


def test_every_bad_argument_gets_bad_args_naming_it_on_the_socket(broker: Serve) -> None:
    wrong = []
    with broker.connect() as s:
        for i, (verb, args, name) in enumerate(BAD_ARGS):
            s.sendall(encode({"id": i, "verb": verb, "args": args}))
            reply = read_frame(s)
            ok = (reply is not None and is_error_shape(reply) and reply["id"] == i
                  and reply["error"]["code"] == "bad_args" and reply["error"]["message"].startswith(f"{name}: "))
            if not ok:
                wrong.append((verb, str(args)[:60], reply and str(reply)[:160]))
        s.sendall(encode({"id": "after", "verb": "hello"}))
        assert read_frame(s)["result"]["protocol"] == 1, "still serving on the same connection"
    assert wrong == [], f"{len(wrong)} of {len(BAD_ARGS)} wrong: {wrong}"
    assert broker.proc.poll() is None and broker.tracebacks() == 0, broker.stderr_text()[-2000:]


def test_every_bad_argument_gets_bad_args_naming_it_over_http(broker: Serve) -> None:
    wrong = []
    for verb, args, name in BAD_ARGS:
        if verb in ("stream", "shutdown"):
            continue
        status, body = broker.http("POST", f"/v1/{verb}?client=args", json.dumps(args).encode())
        if not (status == 400 and is_error_shape(body) and body["error"]["code"] == "bad_args"
                and body["error"]["message"].startswith(f"{name}: ")):
            wrong.append((verb, str(args)[:60], status, str(body)[:160]))
    assert wrong == [], f"{len(wrong)} wrong: {wrong}"
    for query, name in (("client=" + "x" * 200, "client"), ("client=a%20b", "client"), ("client=a&client=b", "client"),
                        ("user=x", "user")):
        status, body = broker.http("POST", f"/v1/hello?{query}", b"{}")
        assert status == 400 and body["error"]["code"] == "bad_args" and body["error"]["message"].startswith(
            f"{name}: "), (query, status, body)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _raw(s: socket.socket, body: bytes) -> dict[str, Any] | None:
    s.sendall(len(body).to_bytes(4, "big") + body)
    return read_frame(s)


RAW_FRAMES = [
    ("args nested 2,000 deep", b'{"id":1,"verb":"subscribe","args":{"pid":' + _nested(2000).encode() + b"}}", "bad_frame"),
    ("id nested 2,000 deep", b'{"id":' + _nested(2000).encode() + b',"verb":"hello"}', "bad_frame"),
    ("frame nested 2,000 deep", _nested(2000).encode(), "bad_frame"),
    ("objects nested 200 deep", b'{"a":' * 200 + b"1" + b"}" * 200, "bad_frame"),
    ("args nested 40 deep", b'{"id":1,"verb":"hello","args":{"x":' + _nested(40).encode() + b"}}", "bad_frame"),
    ("a 5,000-digit integer", b'{"id":1,"verb":"get_event","args":{"timeout":' + b"9" * 5000 + b"}}", "bad_frame"),
    ("a 5,000-digit id", b'{"id":' + b"7" * 5000 + b',"verb":"hello"}', "bad_frame"),
    ("NaN as the id", b'{"id":NaN,"verb":"hello"}', "bad_frame"),
    ("a list as the id", b'{"id":[1,2],"verb":"hello"}', "bad_frame"),
    ("a long id", b'{"id":"' + b"i" * 100_000 + b'","verb":"hello"}', "bad_frame"),
    ("an unknown field", b'{"id":1,"verb":"hello","argz":{}}', "bad_frame"),
    ("args a list", b'{"id":1,"verb":"hello","args":[]}', "bad_args"),
    ("verb a list", b'{"id":1,"verb":["hello"]}', "unknown_verb"),
    ("verb of 150,000 NULs", json.dumps({"id": 1, "verb": "\0" * 150_000}).encode(), "unknown_verb"),
    ("verb a lone surrogate", b'{"id":1,"verb":"\\ud800"}', "unknown_verb"),
    ("bytes that are not UTF-8", b'{"id":1,"verb":"\xff\xfe"}', "bad_frame"),
    ("not JSON", b"{not json", "bad_frame"),
    ("a JSON string", b'"hello"', "bad_frame"),
    ("empty", b"", "bad_frame"),
]


def test_raw_frames_nesting_and_huge_numbers_get_an_error_and_the_connection_goes_on(broker: Serve) -> None:
    wrong = []
    with broker.connect() as s:
        for what, body, code in RAW_FRAMES:
            try:
                reply = _raw(s, body)
            except Exception as exc:  # noqa: BLE001 - any failure to read a reply is the finding
                wrong.append((what, f"{type(exc).__name__}: {exc}"[:200]))
                s = broker.connect()
                continue
            if not (is_error_shape(reply) and reply["error"]["code"] == code and len(json.dumps(reply)) < 2000):
                wrong.append((what, str(reply)[:200]))
            s.sendall(encode({"id": 2, "verb": "hello"}))
            if not is_result_shape(read_frame(s)):
                wrong.append((what, "connection no longer serves"))
        s.close()
    assert wrong == [], wrong
    assert broker.tracebacks() == 0, broker.stderr_text()[-3000:]


# -- 3. frame and body lengths ---------------------------------------------------------------


def _frames_until_eof(s: socket.socket) -> list[dict[str, Any]]:
    frames = []
    while (frame := read_frame(s)) is not None:
        frames.append(frame)
    return frames


def test_an_oversized_frame_header_is_refused_and_the_connection_closed(broker: Serve) -> None:
    rss = broker.rss_kb()
    for length in (0xFFFFFFFF, MAX_FRAME + 1):
        with broker.connect(timeout=10) as s:
            s.sendall(length.to_bytes(4, "big") + b"{}")
            started = time.monotonic()
            frames = _frames_until_eof(s)
            assert [f["error"]["code"] for f in frames] == ["frame_too_large"] and time.monotonic() - started < 3
    assert broker.rss_kb() - rss < 20_000, "no buffer was allocated for the announced length"


def test_a_half_sent_frame_is_closed_after_the_frame_timeout(broker: Serve) -> None:
    limits = broker.stats().get("limits", {"frame_timeout_s": 5})
    for partial in (b"\0\0", (100).to_bytes(4, "big") + b'{"id":1,'):
        with broker.connect(timeout=limits["frame_timeout_s"] + 8) as s:
            s.sendall(partial)
            started = time.monotonic()
            frames = _frames_until_eof(s)
            waited = time.monotonic() - started
        assert [f["error"]["code"] for f in frames] == ["timeout"], frames
        assert limits["frame_timeout_s"] - 0.5 < waited < limits["frame_timeout_s"] + 3, waited


def _post(port: int, headers: str, body: bytes = b"") -> bytes:
    return (f"POST /v1/stats?client=len HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"{headers}\r\n").encode() + body


LENGTHS = [
    ("Content-Length: -1\r\n", 400, "bad_length"),
    ("Content-Length: 1e11\r\n", 400, "bad_length"),
    ("Content-Length: 100000000000\r\n", 413, "too_large"),
    (f"Content-Length: {2 * MAX_FRAME}\r\n", 413, "too_large"),
    ("Content-Length: abc\r\n", 400, "bad_length"),
    ("Content-Length: +2\r\n", 400, "bad_length"),
    ("Content-Length: 2\r\nContent-Length: 2\r\n", 400, "bad_length"),
    ("", 411, "length_required"),
    ("Transfer-Encoding: chunked\r\n", 411, "length_required"),
    ("Transfer-Encoding: chunked\r\nContent-Length: 2\r\n", 411, "length_required"),
]


@pytest.mark.parametrize("headers,status,code", LENGTHS, ids=[h.strip() or "none" for h, _, _ in LENGTHS])
def test_http_lengths_are_checked_before_the_body_is_read(broker: Serve, headers: str, status: int,
                                                          code: str) -> None:
    """The client sends the head only and keeps the connection open: the answer must come without a body."""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
        s.sendall(_post(broker.port, headers))
        started = time.monotonic()
        try:
            got, body = parse_response(read_all(s))
        except TimeoutError:
            got, body = "no answer in 10 s", b""
    assert (got, time.monotonic() - started < 5) == (status, True), broker.stderr_text()[-1500:]
    reply = json.loads(body)
    assert is_error_shape(reply) and reply["error"]["code"] == code
    assert broker.proc.poll() is None


def test_a_body_shorter_than_its_length_is_refused(broker: Serve) -> None:
    status, body = broker.raw_http(_post(broker.port, "Content-Length: 10\r\n", b"{}"))
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_length"


def test_http_errors_of_the_server_itself_have_the_error_shape(broker: Serve) -> None:
    for request, want in ((b"BREW /v1/stats HTTP/1.1\r\nHost: x\r\n\r\n", 501),
                          (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
                          (b"GARBAGE\r\n\r\n", 400)):
        status, body = broker.raw_http(request)
        assert status == want and is_error_shape(json.loads(body)), (request[:30], status, body[:200])


# -- 4. connection caps and timeouts --------------------------------------------------------------


def _pending_error_code(conn: socket.socket) -> str | None:
    """The code of an error frame the broker already sent on conn, None when it sent nothing."""
    conn.setblocking(False)
    try:
        data = conn.recv(65536)
    except BlockingIOError:
        return None
    return json.loads(data[4:4 + int.from_bytes(data[:4], "big")])["error"]["code"] if data else "closed"


def test_two_thousand_socket_connections_are_capped(spare: Serve) -> None:
    limits = spare.stats().get("limits", {"connections": 128})
    base, conns, peak = spare.threads(), [], 0
    for i in range(2000):
        conns.append(spare.connect(timeout=10))
        if i % 100 == 99:
            peak = max(peak, spare.threads())
    time.sleep(1)
    peak = max(peak, spare.threads())
    codes = [_pending_error_code(c) for c in conns]
    for c in conns:
        c.close()
    assert peak <= base + limits["connections"] + 5, f"{peak} threads for 2,000 connections (base {base})"
    assert codes.count("busy") >= 2000 - limits["connections"]
    assert _until(lambda: spare.threads() <= base + 2, 10), spare.threads()
    assert spare.stats()["connections"]["refused"] >= codes.count("busy") and spare.call("hello")["ok"]


def test_two_thousand_http_connections_are_capped(spare: Serve) -> None:
    limits = spare.stats().get("limits", {"http_connections": 64})
    base, conns, peak = spare.threads(), [], 0
    for i in range(2000):
        conns.append(socket.create_connection(("127.0.0.1", spare.port), timeout=10))
        if i % 100 == 99:
            peak = max(peak, spare.threads())
    time.sleep(0.5)
    peak = max(peak, spare.threads())
    refused = 0
    for c in conns[-200:]:
        c.settimeout(2)
        try:
            status, body = parse_response(read_all(c))
        except (TimeoutError, ConnectionResetError):
            continue
        refused += status == 503 and json.loads(body)["error"]["code"] == "busy"
    for c in conns:
        c.close()
    assert peak <= base + limits["http_connections"] + 5, f"{peak} threads for 2,000 connections (base {base})"
    assert refused >= 190
    status, body = spare.http("POST", "/v1/stats", b"{}")
    assert status == 200 and body["result"]["connections"]["http_refused"] >= 2000 - limits["http_connections"]


def test_an_idle_connection_is_closed_and_a_working_one_is_not(short_idle: Serve, sleeper: subprocess.Popen) -> None:
    idle = short_idle.connect(timeout=10)
    puller, streamer = short_idle.connect(timeout=10), short_idle.connect(timeout=10)
    streamer.sendall(encode({"id": 1, "verb": "subscribe", "args": {"pid": sleeper.pid}}))
    streamer.sendall(encode({"id": 2, "verb": "stream"}))
    assert [read_frame(streamer)["ok"] for _ in range(2)] == [True, True]
    started = time.monotonic()
    for i in range(4):  # a client that pulls in a loop, each pull waiting 1.5 s (under the idle timeout)
        puller.sendall(encode({"id": i, "verb": "get_event", "args": {"timeout": 1.5}}))
        assert read_frame(puller)["ok"]
    frames = _frames_until_eof(idle)
    assert [f["error"]["code"] for f in frames] == ["idle_timeout"] and time.monotonic() - started < 8
    streamer.sendall(encode({"id": 3, "verb": "hello"}))  # silent for 6 s while streaming: still served
    assert read_frame(streamer)["id"] == 3
    for s in (idle, puller, streamer):
        s.close()


def test_trickled_http_headers_are_cut_off(broker: Serve) -> None:
    limit = broker.stats().get("limits", {"http_request_timeout_s": 10})["http_request_timeout_s"]
    request = _post(broker.port, "Content-Length: 2\r\n", b"{}")  # a byte each 0.5 s: a minute in all
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as s:
        started = time.monotonic()
        for byte in request:
            if select.select([s], [], [], 0.5)[0] or time.monotonic() - started > limit + 5:
                break
            s.sendall(bytes([byte]))
        waited = time.monotonic() - started
        status, body = parse_response(read_all(s)) if waited < limit + 5 else (None, b"")
    assert waited < limit + 3, f"still open after {waited:.1f} s"
    assert status == 408 and json.loads(body)["error"]["code"] == "timeout"


# -- 5. every resource of a gone client is freed ---------------------------------------------------


def test_a_gone_socket_client_frees_its_kernel_targets(broker: Serve, sleeper: subprocess.Popen) -> None:
    s = broker.connect()
    s.sendall(encode({"id": 1, "verb": "subscribe", "args": {"pid": sleeper.pid}}))
    assert read_frame(s)["ok"] and sleeper.pid in broker.kernel_targets()
    s.close()
    assert _until(lambda: sleeper.pid not in broker.kernel_targets(), 5)
    assert broker.stats()["kernel_targets"] == len(broker.kernel_targets())


def test_a_disconnected_sse_stream_frees_its_client_and_kernel_targets(broker: Serve,
                                                                       sleeper: subprocess.Popen) -> None:
    status, _ = broker.http("POST", "/v1/subscribe?client=sse1", json.dumps({"pid": sleeper.pid}).encode())
    assert status == 200 and sleeper.pid in broker.kernel_targets() and "http:sse1" in broker.client_names()
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
    s.sendall(f"GET /v1/stream?client=sse1 HTTP/1.1\r\nHost: 127.0.0.1:{broker.port}\r\n"
              f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
    assert s.recv(4096).startswith(b"HTTP/1.0 200")
    s.close()
    assert _until(lambda: "http:sse1" not in broker.client_names(), 5), broker.client_names()
    assert sleeper.pid not in broker.kernel_targets()


def test_an_idle_http_client_expires_with_its_kernel_targets(short_idle: Serve, sleeper: subprocess.Popen) -> None:
    status, body = short_idle.http("POST", "/v1/subscribe?client=idle1", json.dumps({"pid": sleeper.pid}).encode())
    assert status == 200, body
    assert "http:idle1" in short_idle.client_names() and sleeper.pid in short_idle.kernel_targets()
    assert _until(lambda: "http:idle1" not in short_idle.client_names(), 8)
    assert sleeper.pid not in short_idle.kernel_targets()


def test_another_client_keeps_a_shared_kernel_target(short_idle: Serve, sleeper: subprocess.Popen) -> None:
    keeper = short_idle.connect()
    keeper.sendall(encode({"id": 1, "verb": "subscribe", "args": {"pid": sleeper.pid}}))
    assert read_frame(keeper)["ok"]
    status, _ = short_idle.http("POST", "/v1/subscribe?client=shared", json.dumps({"pid": sleeper.pid}).encode())
    assert status == 200

    def http_client_gone() -> bool:
        keeper.sendall(encode({"id": 2, "verb": "get_event", "args": {"timeout": 0}}))  # the keeper is not idle
        assert read_frame(keeper)["ok"]
        return "http:shared" not in short_idle.client_names()

    assert _until(http_client_gone, 8)
    assert sleeper.pid in short_idle.kernel_targets(), "the socket client still wants it"
    keeper.close()
    assert _until(lambda: sleeper.pid not in short_idle.kernel_targets(), 5), "and now nobody does"


# -- 6. set_pids in linear time ----------------------------------------------------------------


def test_set_pids_with_5000_pids_takes_little_cpu(broker: Serve) -> None:
    pids = _sleepers(5000)
    try:
        with broker.connect(timeout=600) as s:
            before, started = broker.cpu_s(), time.monotonic()
            s.sendall(encode({"id": 1, "verb": "set_pids", "args": {"pids": pids, "depth": 1}}))
            reply = read_frame(s)
            cpu, wall = broker.cpu_s() - before, time.monotonic() - started
            assert reply["ok"], reply
            assert len(reply["result"]["subscriptions"]) == 5000 and set(pids) <= broker.kernel_targets()
            assert cpu < 5, f"set_pids of 5,000 pids took {cpu:.1f} s of CPU ({wall:.1f} s)"
            s.sendall(encode({"id": 2, "verb": "set_pids", "args": {"pids": []}}))
            assert read_frame(s)["ok"] and not set(pids) & broker.kernel_targets()
            assert broker.cpu_s() - before < 8
    finally:
        _reap(pids)


# -- 7. DNS rebinding -------------------------------------------------------------------------------


def test_a_foreign_host_or_origin_is_refused(broker: Serve) -> None:
    port = broker.port
    for headers, code in (({"Host": "evil.example"}, "bad_host"),
                          ({"Host": f"evil.example:{port}"}, "bad_host"),
                          ({"Host": f"127.0.0.1:{port + 1}"}, "bad_host"),
                          ({"Origin": f"http://evil.example:{port}"}, "bad_origin"),
                          ({"Origin": "null"}, "bad_origin")):
        status, body = broker.http("POST", "/v1/stats", b"{}", headers=headers)
        assert (status, body["error"]["code"]) == (403, code), headers
    for headers in ({"Host": f"localhost:{port}"}, {"Origin": f"http://127.0.0.1:{port}"}):
        assert broker.http("POST", "/v1/stats", b"{}", headers=headers)[0] == 200, headers
    status, body = broker.raw_http(f"POST /v1/stats HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n"
                                   "Content-Length: 2\r\n\r\n{}".encode())
    assert status == 403 and json.loads(body)["error"]["code"] == "bad_host", "a request without Host"


# -- fuzz ---------------------------------------------------------------------------------------------

FUZZ_VERBS = ["hello", "subscribe", "unsubscribe", "set_pids", "get_event", "stats", "query_image", "nope", ""]
FUZZ_KEYS = ["pid", "pids", "streams", "depth", "ttl_s", "queue", "timeout", "max", "x", "", "pid "]


def _fuzz_values(pid: int) -> list[Any]:
    return [None, True, False, 0, -1, 2, 3, 2**31, 2**63, 2**64 + 1, 10**100, 4_000_000, pid, -0.0, 0.5, 1e308,
            float("nan"), float("inf"), float("-inf"), "", "all", "process,file", "bogus", "x" * 5000, "\ud800",
            "\0", [], [pid], [4_000_000], ["all"], ["process", 7], [[pid]], {}, {"a": 1}, {"pid": pid},
            json.loads(_nested(30)), list(range(4_000_000, 4_000_050))]


def _fuzz_args(rng: random.Random, pid: int) -> Any:
    if rng.random() < 0.05:
        return rng.choice([[], "x", 5, None])
    values = _fuzz_values(pid)
    args = {rng.choice(FUZZ_KEYS): rng.choice(values) for _ in range(rng.randint(0, 4))}
    if isinstance(args.get("timeout"), (int, float)) and not isinstance(args["timeout"], bool):
        args["timeout"] = 0 if 0 < args["timeout"] <= 60 else args["timeout"]  # no long waits
    if args.get("pid") in (2, 3):  # real processes: their trees would flood the broker
        args["pid"] = 4_000_000
    return args


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op, at = rng.randrange(4), rng.randrange(len(out) + 1)
        if op == 0 and at < len(out):
            out[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[at:at] = bytes([rng.randrange(256)])
        elif op == 2:
            del out[at:at + rng.randint(1, 8)]
        else:
            out[at:at] = out[at:at + rng.randint(1, 16)] * rng.randint(1, 50)
    return bytes(out)


def _fuzz_frame(rng: random.Random, pid: int, i: int) -> bytes:
    frame = {"id": i, "verb": rng.choice(FUZZ_VERBS), "args": _fuzz_args(rng, pid)}
    body = json.dumps(frame).encode()
    if rng.random() < 0.4 and frame["verb"] != "get_event":
        body = _mutate(rng, body)
    return body


def test_fuzz_frames_over_the_socket_get_a_result_or_the_error_shape(spare: Serve, sleeper: subprocess.Popen) -> None:
    rng, wrong, replies = random.Random(1313), [], 0
    s = spare.connect(timeout=20)
    for i in range(2500):
        body = _fuzz_frame(rng, sleeper.pid, i)
        try:
            reply = _raw(s, body)
        except (OSError, ValueError) as exc:
            wrong.append((i, body[:120], f"{type(exc).__name__}: {exc}"))
            s = spare.connect(timeout=20)
            continue
        replies += 1
        if not (is_result_shape(reply) or is_error_shape(reply)):
            wrong.append((i, body[:120], str(reply)[:200]))
    s.close()
    assert wrong == [], f"{len(wrong)} of 2500: {wrong[:10]}"
    assert spare.proc.poll() is None and spare.call("hello")["ok"] and spare.tracebacks() == 0, \
        spare.stderr_text()[-3000:]


def _fuzz_request(rng: random.Random, pid: int, port: int, token: str) -> bytes:
    method = rng.choice(["POST"] * 6 + ["GET", "PUT", "HEAD", "DELETE", "OPTIONS"])
    verb = rng.choice(FUZZ_VERBS + ["stream", "../etc/passwd", "stats/x"])
    query = rng.choice(["", "?client=fz", "?client=fz2", "?client=", "?client=%00", "?client=" + "z" * 100, "?x=1"])
    body = json.dumps(_fuzz_args(rng, pid)).encode()
    head = f"{method} /v1/{verb}{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
    if verb == "stream" and method == "GET":
        method, head = "POST", head.replace("GET", "POST", 1)  # an open stream would never answer in full
    request = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return _mutate(rng, request) if rng.random() < 0.3 else request


def test_fuzz_requests_over_http_get_a_result_or_the_error_shape(spare: Serve, sleeper: subprocess.Popen) -> None:
    rng, wrong = random.Random(1314), []
    for i in range(600):
        request = _fuzz_request(rng, sleeper.pid, spare.port, spare.token)
        try:
            status, body = spare.raw_http(request, timeout=20)
        except OSError as exc:
            wrong.append((i, request[:100], f"{type(exc).__name__}: {exc}"))
            continue
        if request.startswith(b"HEAD "):
            ok = status is not None
        else:
            try:
                reply = json.loads(body)
            except ValueError:
                reply = None
            ok = status is not None and (is_result_shape(reply) if status == 200 else is_error_shape(reply))
        if not ok:
            wrong.append((i, request[:100], status, body[:160]))
    assert wrong == [], f"{len(wrong)} of 600: {wrong[:10]}"
    assert spare.proc.poll() is None and spare.http("POST", "/v1/hello", b"{}")[0] == 200
    assert spare.tracebacks() == 0, spare.stderr_text()[-3000:]


def test_http_clients_are_capped(spare: Serve) -> None:
    cap = spare.stats().get("limits", {}).get("http_clients", 64)
    statuses = [spare.http("POST", f"/v1/hello?client=cap{i}", b"{}")[0] for i in range(cap + 5)]
    known = len([n for n in spare.client_names() if n.startswith("http:")])
    status, body = spare.http("POST", "/v1/hello?client=one-more", b"{}")
    assert statuses.count(200) <= cap and known <= cap, (statuses.count(200), known)
    assert (status, body["error"]["code"]) == (429, "too_many_clients")
