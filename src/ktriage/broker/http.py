"""The broker's HTTP API on loopback: the same verbs, a bearer token, one error shape.

POST /v1/<verb>?client=NAME with the verb's args as a JSON body; GET
/v1/stream?client=NAME is a Server-Sent Events stream of that client's queue.
Clients are named by the caller (1-64 of A-Z a-z 0-9 . _ -; created on first
use, at most BrokerLimits.http_clients) and freed when their stream ends or when they
had no request and no stream for BrokerLimits.idle_timeout_s. HTTP clients are never
root, so ``shutdown`` is refused here. Every failure, the server's own
included, is ``{"id": null, "ok": false, "error": {"code", "message"}}`` with a
4xx/5xx status.

Checked before anything is read past the headers: the Host header must name
the listening address (and Origin, when sent, the same), against DNS
rebinding; the bearer token (compared in constant time); the body's length
(one decimal Content-Length within BrokerLimits.http_body; no Transfer-Encoding).
A request must be complete BrokerLimits.http_request_timeout_s after the connection
opened, its head within BrokerLimits.http_head bytes; at most
BrokerLimits.http_connections connections are served at once (more get 503).
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import re
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ktriage.broker.clients import BrokerClient
from ktriage.broker.limits import BrokerLimits, Gate
from ktriage.broker.protocol import VERBS, ProtocolError, parse_json, shown, wait_readable
from ktriage.broker.token import check_token

log = logging.getLogger(__name__)
HTTP_UID = -1  # never root
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LENGTH = re.compile(r"[0-9]{1,12}")
_HEARTBEAT_S = 15.0
_LINGER_S = 1.0
_STATUS_OF = {"unauthorized": 401, "bad_host": 403, "bad_origin": 403, "not_found": 404, "unknown_verb": 404,
              "timeout": 408, "already_streaming": 409, "length_required": 411, "too_large": 413,
              "too_many_clients": 429, "busy": 503}
_CODE_OF = {400: "bad_request", 404: "not_found", 408: "timeout", 411: "length_required", 413: "too_large",
            414: "too_large", 431: "too_large", 501: "unsupported", 505: "unsupported"}


class Refused(ProtocolError):
    """A request answered with an HTTP error status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message, fatal=True)
        self.status = status


def _json_response(status: int, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = (f"HTTP/1.0 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
    return head.encode() + data


class _DeadlineReader(io.RawIOBase):
    """The request's bytes: all of them within a deadline, and no more than a budget."""

    def __init__(self, sock: socket.socket, timeout_s: float, budget: int) -> None:
        self.sock, self.timeout_s, self.budget = sock, timeout_s, budget
        self.deadline = time.monotonic() + timeout_s

    def readable(self) -> bool:
        return True

    def allow(self, n: int) -> None:
        self.budget += n

    def readinto(self, buf: Any) -> int:
        if self.budget <= 0:
            raise Refused(431, "too_large", "the request line and headers are too long")
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self._late()
        self.sock.settimeout(remaining)
        try:
            got = self.sock.recv_into(memoryview(buf)[: self.budget])
        except TimeoutError:
            raise self._late() from None
        self.budget -= got
        return got

    def _late(self) -> Refused:
        return Refused(408, "timeout", f"the request was not complete {self.timeout_s:g} s after the connection "
                                       "opened")


class _Handler(BaseHTTPRequestHandler):
    api: HttpApi
    broker: Any
    limits: BrokerLimits
    default_request_version = "HTTP/1.0"  # so that even a garbled request line is answered with a status line
    server_version = "ktriage"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self.reader = _DeadlineReader(self.connection, self.limits.http_request_timeout_s, self.limits.http_head)
        self.rfile = io.BufferedReader(self.reader)
        self.answered = False
        self.command, self.requestline, self.request_version = None, "", self.default_request_version

    def log_message(self, *args: Any) -> None:  # requests are not logged to stderr
        return

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except ProtocolError as exc:
            self._fail(exc)
        except OSError as exc:  # the peer went away or stopped reading: nobody to answer
            log.debug("http: connection ended: %s", exc)
            self.close_connection = True

    def parse_request(self) -> bool:
        if not self.raw_requestline.strip():
            self.send_error(400, "empty request line")
            return False
        return super().parse_request()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The server's own errors (bad request line, unknown method, long headers) in the one error shape."""
        self._fail(Refused(code, _CODE_OF.get(code, "bad_request"), message or HTTPStatus(code).phrase))

    # -- answers -------------------------------------------------------------------

    def _writing(self) -> None:
        self.connection.settimeout(self.limits.write_timeout_s)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        self._writing()
        self.answered = True
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _fail(self, exc: ProtocolError) -> None:
        self.close_connection = True
        if self.answered:  # a stream already under way cannot be answered again
            return
        try:
            self._send(getattr(exc, "status", None) or _STATUS_OF.get(exc.code, 400), exc.reply(None))
            self._linger()
        except OSError as err:
            log.debug("http: the answer could not be sent: %s", err)

    def _linger(self) -> None:
        """End our side, then read (and drop) what the peer still sends for a moment, so that closing with
        unread bytes does not reset the connection before the peer reads the answer."""
        self.connection.shutdown(socket.SHUT_WR)
        deadline, drained = time.monotonic() + _LINGER_S, 0
        while drained < self.limits.http_body and wait_readable(self.connection, deadline):
            chunk = self.connection.recv(65536)
            if not chunk:
                return
            drained += len(chunk)

    # -- checks --------------------------------------------------------------------

    def _check_caller(self) -> None:
        """Host and Origin name this server (DNS rebinding), and the bearer token is right."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or hosts[0].strip().lower() not in self.api.hosts:
            raise Refused(403, "bad_host", f"Host {shown(', '.join(hosts) or None)} is not this server's address "
                                           f"({', '.join(sorted(self.api.hosts))})")
        origins = self.headers.get_all("Origin") or []
        if origins and (len(origins) != 1 or origins[0].strip().lower() not in self.api.origins):
            raise Refused(403, "bad_origin", f"Origin {shown(', '.join(origins))} is not this server")
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        if not (scheme == "Bearer" and self.api.token
                and hmac.compare_digest(given.strip().encode(), self.api.token.encode())):
            raise Refused(401, "unauthorized", "missing or wrong bearer token")

    def _client_name(self) -> str:
        try:
            fields = parse_qs(urlsplit(self.path).query, keep_blank_values=True, max_num_fields=8)
        except ValueError:
            raise Refused(400, "bad_args", "client: the query has too many fields") from None
        for key in fields:
            if key != "client":
                raise Refused(400, "bad_args", f"{key if len(key) <= 40 else shown(key, 40)}: unknown query "
                                               "parameter (parameters: client)")
        names = fields.get("client", ["http"])
        if len(names) != 1 or not _NAME.fullmatch(names[0]):
            raise Refused(400, "bad_args", "client: must be one name of 1 to 64 letters, digits, '.', '_' or '-'")
        return names[0]

    def _body(self) -> bytes:
        if self.headers.get_all("Transfer-Encoding"):
            raise Refused(411, "length_required", "Transfer-Encoding is not accepted: send the body with a "
                                                  "Content-Length")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            raise Refused(411, "length_required", "a POST needs a Content-Length")
        if len(lengths) != 1 or not _LENGTH.fullmatch(lengths[0].strip()):
            raise Refused(400, "bad_length", f"Content-Length must be one decimal number of bytes, got "
                                             f"{shown(', '.join(lengths))}")
        length = int(lengths[0])
        if length > self.limits.http_body:
            raise Refused(413, "too_large", f"a body of {length} bytes exceeds {self.limits.http_body}")
        self.reader.allow(length)
        data = self.rfile.read(length)
        if len(data) < length:
            raise Refused(400, "bad_length", f"the body ended after {len(data)} of {length} bytes")
        return data

    # -- methods -------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802
        self._check_caller()
        path = urlsplit(self.path).path
        verb = path.removeprefix("/v1/")
        if not path.startswith("/v1/") or verb not in VERBS:
            raise Refused(404, "unknown_verb", f"no such verb {shown(verb)} (POST /v1/<verb>: {', '.join(VERBS)})")
        name = self._client_name()
        body = self._body()
        args = parse_json(body, "body") if body else {}
        with self.broker.http_client(name, HTTP_UID) as client:
            reply = self.broker.handle(client, {"id": None, "verb": verb, "args": args})
        self._send(200 if reply["ok"] else _STATUS_OF.get(reply["error"]["code"], 400), reply)

    def do_GET(self) -> None:  # noqa: N802
        self._check_caller()
        if urlsplit(self.path).path != "/v1/stream":
            raise Refused(404, "not_found", f"no such endpoint {shown(urlsplit(self.path).path)} (GET /v1/stream, "
                                            "POST /v1/<verb>)")
        with self.broker.http_client(self._client_name(), HTTP_UID) as client:
            if client.streaming:
                raise Refused(409, "already_streaming", f"{client.name} already has an open stream")
            client.streaming = True
            try:
                self._stream(client)
            except OSError as exc:  # the reader went away, or took nothing for write_timeout_s
                log.debug("http: %s: stream ended: %s", client.name, exc)
            finally:
                self.close_connection = True
        self.broker.drop_client(client)  # a stream's end is its client's end

    def _stream(self, client: BrokerClient) -> None:
        self._writing()
        self.answered = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        last_write = time.monotonic()
        while not client.closed and not self.broker.stopping.is_set() and not self._peer_gone():
            items = client.take(0.5, limit=256)
            if items:
                self.wfile.write(b"".join(f"id: {i['seq']}\ndata: {json.dumps(i['event'])}\n\n".encode()
                                          for i in items))
            elif time.monotonic() - last_write > _HEARTBEAT_S:
                self.wfile.write(b": keep-alive\n\n")
            else:
                continue
            last_write = time.monotonic()

    def _peer_gone(self) -> bool:
        """Whether the reader closed its side (anything else it sends is read and dropped)."""
        if not wait_readable(self.connection, time.monotonic()):
            return False
        return not self.connection.recv(4096)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[_Handler], gate: Gate) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.gate = gate
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.gate.enter():
            self._refuse(request)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.gate.leave()

    def _refuse(self, request: socket.socket) -> None:
        """503 without a thread, never blocking: best effort (a peer that cannot take it loses it)."""
        error = Refused(503, "busy", f"the broker serves at most {self.gate.cap} HTTP connections at once: "
                                     "try again later")
        request.setblocking(False)
        try:
            request.send(_json_response(503, error.reply(None)))
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            pass  # closed either way


class HttpApi:
    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.token = check_token(token)
        self.server: _Server | None = None
        self.gate: Gate | None = None
        self.hosts: frozenset[str] = frozenset()
        self.origins: frozenset[str] = frozenset()

    def start(self, broker: Any) -> None:
        handler = type("Handler", (_Handler,), {"api": self, "broker": broker, "limits": broker.limits})
        self.gate = Gate(broker.limits.http_connections)
        self.server = _Server((self.host, self.port), handler, self.gate)
        self.port = self.server.server_address[1]
        names = {f"[{self.host}]" if ":" in self.host else self.host, "localhost"}
        self.hosts = frozenset(f"{name}:{self.port}".lower() for name in names)
        self.origins = frozenset(f"http://{host}" for host in self.hosts)
        threading.Thread(target=self.server.serve_forever, name="ktriage-http", daemon=True).start()

    def stats(self) -> dict[str, int]:
        return {"active": self.gate.active, "refused": self.gate.refused} if self.gate else {}

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
