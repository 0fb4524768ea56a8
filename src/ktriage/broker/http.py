"""The broker's HTTP API on loopback: the same verbs, a bearer token, one error shape.

POST /v1/<verb>?client=NAME with the verb's args as a JSON body; GET
/v1/stream?client=NAME is a Server-Sent Events stream of that client's queue.
Clients are named by the caller (created on first use); HTTP clients are never
root, so ``shutdown`` is refused here. Errors: ``{"ok": false, "error": {"code",
"message"}}`` with a 4xx status.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from ktriage.broker.protocol import ProtocolError

HTTP_UID = -1  # never root


def load_token(path: Path) -> str:
    """The token in path; a new random one is written there (mode 0600) when it does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


class HttpApi:
    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token
        self.server: ThreadingHTTPServer | None = None

    def start(self, broker: Any) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # requests are not logged to stderr
                return

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                given = self.headers.get("Authorization", "")
                if hmac.compare_digest(given.encode(), f"Bearer {api.token}".encode()):
                    return True
                self._send(401, ProtocolError("unauthorized", "missing or wrong bearer token").reply(None))
                return False

            def _client(self) -> Any:
                name = parse_qs(urlparse(self.path).query).get("client", ["http"])[0]
                with broker.lock:
                    existing = broker.clients.get(f"http:{name}")
                return existing or broker.new_client(HTTP_UID, f"http:{name}")

            def do_POST(self) -> None:  # noqa: N802
                if not self._authorized():
                    return
                verb = urlparse(self.path).path.removeprefix("/v1/")
                try:
                    args = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                except json.JSONDecodeError as exc:
                    self._send(400, ProtocolError("bad_frame", f"body is not JSON: {exc.msg}").reply(None))
                    return
                reply = broker.handle(self._client(), {"id": None, "verb": verb, "args": args})
                self._send(200 if reply["ok"] else 400, reply)

            def do_GET(self) -> None:  # noqa: N802
                if not self._authorized():
                    return
                if urlparse(self.path).path != "/v1/stream":
                    self._send(404, ProtocolError("not_found", f"no such endpoint {self.path}").reply(None))
                    return
                client = self._client()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                while not client.closed and not broker.stopping.is_set():
                    for item in client.take(0.5, limit=256):
                        self.wfile.write(f"id: {item['seq']}\ndata: {json.dumps(item['event'])}\n\n".encode())
                    self.wfile.flush()

        self.server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="ktriage-http", daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
