"""A real `ktriage ui` process for the tests: started on a free loopback port,
its stderr collected by a thread, the per-start token taken from the URL it
prints, and plain HTTP requests (http.client, so any header can be set)."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from typing import Any

URL_LINE = re.compile(r"triage UI on (\S+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UiServer:
    def __init__(self, db: str, startup_s: float = 30) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "ktriage", "ui", "--db", db, "--listen",
                                      f"127.0.0.1:{self.port}"], stderr=subprocess.PIPE, text=True)
        self.stderr_lines: list[str] = []
        self._printed = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        self.url = self._wait_url(startup_s)
        self.token = urllib.parse.parse_qs(urllib.parse.urlsplit(self.url).query).get("token", [None])[0]
        self._wait_listening(startup_s)

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            if URL_LINE.search(line):
                self._printed.set()
        self._printed.set()

    def _wait_url(self, timeout: float) -> str:
        self._printed.wait(timeout)
        found = next((URL_LINE.search(line) for line in self.stderr_lines if URL_LINE.search(line)), None)
        if found is None:
            self.proc.kill()
            raise AssertionError("the UI printed no URL: " + "".join(self.stderr_lines))
        return found.group(1)

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the UI did not listen: " + self.stderr)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def request(self, path: str, headers: dict[str, str] | None = None, method: str = "GET", token: bool = True,
                timeout: float = 30) -> tuple[int, Any, dict[str, str]]:
        """(status, the JSON body or the raw text, headers); the token header is sent unless token=False."""
        sent = {"Host": f"127.0.0.1:{self.port}"}
        if token and self.token:
            sent["X-Ktriage-Token"] = self.token
        sent.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in sent.items():
                conn.putheader(name, value)
            conn.endheaders()
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        return resp.status, body, {k.lower(): v for k, v in resp.getheaders()}

    def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, body, _ = self.request(path, **kwargs)
        return status, body

    def sql(self, query: str, timeout: float = 30) -> tuple[int, Any]:
        return self.get("/api/sql?q=" + urllib.parse.quote(query), timeout=timeout)

    def peak_rss_kb(self) -> int:
        """VmHWM of the UI process: the most resident memory it ever had."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def is_error_shape(body: Any, code: str | None = None) -> bool:
    """The one error shape: {"ok": false, "error": {"code", "message"}} (and, when given, that code)."""
    return (isinstance(body, dict) and set(body) == {"ok", "error"} and body["ok"] is False
            and isinstance(body["error"], dict) and set(body["error"]) == {"code", "message"}
            and isinstance(body["error"]["message"], str) and body["error"]["message"] != ""
            and (code is None or body["error"]["code"] == code))
