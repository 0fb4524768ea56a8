"""A real `ktriage serve` for the broker tests, and the probes they read it with:
its thread count and CPU time from /proc, the kernel's `targets` map through
bpftool, raw socket frames and raw HTTP requests."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ktriage.broker.protocol import encode, read_frame


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`ktriage serve --http` on a private socket and a free loopback port; stderr goes to a file."""

    def __init__(self, tmp: Path, *extra: str, token_file: Path | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ktriage-sec-", dir=tmp))
        self.socket = str(self.dir / "broker.sock")
        self.port = free_port()
        self.token_file = token_file or self.dir / "token"
        self.stderr_path = self.dir / "stderr"
        self.stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "ktriage", "serve", "--socket", self.socket, "--http",
                                      f"127.0.0.1:{self.port}", "--token-file", str(self.token_file), *extra],
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        line = self.proc.stdout.readline()
        if "broker serving on" not in line:
            self.proc.kill()
            raise AssertionError(f"broker did not start: {line}{self.stderr_text()}")
        self.token = self.token_file.read_text().strip()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the HTTP thread starts just after the line
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)

    # -- the process -------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _status(self, field: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            return int(next(line for line in f if line.startswith(field + ":")).split()[1])

    def threads(self) -> int:
        return self._status("Threads")

    def rss_kb(self) -> int:
        return self._status("VmRSS")

    def cpu_s(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def stderr_text(self) -> str:
        if not self.stderr.closed:
            self.stderr.flush()
        return self.stderr_path.read_text()

    def tracebacks(self) -> int:
        return self.stderr_text().count("Traceback")

    def kernel_targets(self) -> set[int]:
        """The pids in this broker's own `targets` BPF map, read by bpftool (the kernel's view)."""
        for map_id in _map_ids(self.pid):
            info = json.loads(_bpftool("map", "show", "id", map_id))
            if info.get("name") == "targets":
                return {entry["formatted"]["key"] for entry in json.loads(_bpftool("map", "dump", "id", map_id))}
        raise AssertionError(f"no targets map among the fds of {self.pid}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        self.stderr.close()

    # -- the socket ----------------------------------------------------------------

    def connect(self, timeout: float = 15) -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.socket)  # blocking: a Unix connect with a timeout fails at once (EAGAIN) on a full backlog
        s.settimeout(timeout)
        return s

    def call(self, verb: str, timeout: float = 15, **args: Any) -> dict[str, Any]:
        with self.connect(timeout) as s:
            s.sendall(encode({"id": 1, "verb": verb, "args": args}))
            return read_frame(s)

    def stats(self) -> dict[str, Any]:
        return self.call("stats")["result"]

    def client_names(self) -> set[str]:
        return {c["client"] for c in self.stats()["clients"]}

    # -- HTTP ------------------------------------------------------------------------

    def http(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
             token: bool = True, timeout: float = 15) -> tuple[int, dict[str, Any] | None]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        sent = {"Authorization": f"Bearer {self.token}"} if token else {}
        sent.update(headers or {})
        conn.request(method, path, body=body, headers=sent)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, json.loads(data) if data else None

    def raw_http(self, request: bytes, timeout: float = 15) -> tuple[int | None, bytes]:
        """Send request bytes, half-close, read to EOF: (status or None when nothing came back, body)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
            return parse_response(read_all(s))


def read_all(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def parse_response(data: bytes) -> tuple[int | None, bytes]:
    if not data:
        return None, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _bpftool(*args: str) -> str:
    return subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, check=True, timeout=30).stdout


def _map_ids(pid: int) -> list[str]:
    ids = []
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        found = re.search(r"^map_id:\s*(\d+)", text, re.M)
        if found:
            ids.append(found.group(1))
    return ids


def is_error_shape(reply: Any) -> bool:
    """The one error shape: exactly id, ok false, and an error of code and message (both strings)."""
    return (isinstance(reply, dict) and set(reply) == {"id", "ok", "error"} and reply["ok"] is False
            and isinstance(reply["error"], dict) and set(reply["error"]) == {"code", "message"}
            and all(isinstance(v, str) and v for v in reply["error"].values()))


def is_result_shape(reply: Any) -> bool:
    return isinstance(reply, dict) and set(reply) == {"id", "ok", "result"} and reply["ok"] is True
