"""The broker's wire protocol, version 1.

A frame is a 4-byte big-endian length then that many bytes of UTF-8 JSON: at
most MAX_FRAME bytes, nested at most MAX_DEPTH levels (a longer length is
refused before anything is read, and the connection is closed: its stream can
no longer be followed). Requests: ``{"id": n, "verb": "...", "args": {...}}``
and nothing else; the id is an integer or a string of at most MAX_ID_CHARS.
Replies: ``{"id": n, "ok": true, "result": ...}`` or ``{"id": n, "ok": false,
"error": {"code": "...", "message": "..."}}`` — one error shape everywhere, the
HTTP API included. Pushed events (after ``stream``): ``{"event": {...},
"seq": n}`` where seq is per client, so a gap shows a drop.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from typing import Any

VERSION = 1
DEFAULT_SOCKET = "/run/ktriage/broker.sock"  # the server's and the SDK's default
MAX_FRAME = 1 << 20
MAX_DEPTH = 32
MAX_ID_CHARS = 128
_LEN = struct.Struct(">I")
_MAX_ID = 1 << 53

VERBS = ("hello", "subscribe", "unsubscribe", "set_pids", "get_event", "stream", "stats", "query_image", "shutdown")
FIELDS = ("id", "verb", "args")


class ProtocolError(Exception):
    """A frame or request the broker cannot accept; its code goes back to the client.

    fatal: the connection cannot go on after this one (it is answered, then closed)."""

    def __init__(self, code: str, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal

    def reply(self, request_id: Any) -> dict[str, Any]:
        return {"id": request_id, "ok": False, "error": {"code": self.code, "message": self.message}}


def shown(value: Any, limit: int = 60) -> str:
    """A value for an error message: its repr, cut to limit characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def encode(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode()
    return _LEN.pack(len(data)) + data


def nesting(obj: Any) -> int:
    """How deep lists and objects nest in obj (a scalar: 0), counted without recursion up to MAX_DEPTH + 1."""
    deepest, todo = 0, [(obj, 1)]
    while todo and deepest <= MAX_DEPTH:
        node, depth = todo.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            todo.extend((child, depth + 1) for child in children)
    return deepest


def parse_json(data: bytes, what: str) -> Any:
    """UTF-8 JSON into a value nested at most MAX_DEPTH levels; ProtocolError("bad_frame") otherwise."""
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ProtocolError("bad_frame", f"{what} nests deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad_frame", f"{what} is not UTF-8 (byte {exc.start})") from None
    except ValueError as exc:  # JSONDecodeError, and integers too long to convert
        raise ProtocolError("bad_frame", f"{what} is not JSON: {shown(str(exc), 120)}") from None
    if nesting(value) > MAX_DEPTH:
        raise ProtocolError("bad_frame", f"{what} nests deeper than {MAX_DEPTH} levels")
    return value


def wait_readable(sock: socket.socket, deadline: float | None) -> bool:
    """Whether sock has something to read (data or end of stream) before the deadline (None: no deadline)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    timeout_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
    return bool(poller.poll(timeout_ms))


def _read_exact(sock: socket.socket, n: int, deadline: float | None, frame_s: float) -> bytes | None:
    """n bytes, None at end of stream; with a deadline, ProtocolError("timeout") when they are not all there by it."""
    buf = bytearray(n)
    view, have = memoryview(buf), 0
    while have < n:
        if deadline is not None and not wait_readable(sock, deadline):
            raise ProtocolError("timeout", f"frame not complete {frame_s:g} s after its first byte", fatal=True)
        got = sock.recv_into(view[have:])
        if not got:
            return None
        have += got
    return bytes(buf)


def parse_frame(body: bytes) -> dict[str, Any]:
    obj = parse_json(body, "frame")
    if not isinstance(obj, dict):
        raise ProtocolError("bad_frame", "frame is not a JSON object")
    return obj


def read_frame(sock: socket.socket) -> dict[str, Any] | None:
    """The next frame (the socket's own timeout applies), None at end of stream; ProtocolError for a frame
    that is not one."""
    return read_frame_within(sock, None, None)


def read_frame_within(sock: socket.socket, idle_s: float | None, frame_s: float | None) -> dict[str, Any] | None:
    """The next frame, waiting at most idle_s for its first byte and frame_s from then on for the rest
    (None: no limit); None at end of stream. The timeouts and a too-long frame are fatal ProtocolErrors."""
    if frame_s is not None and not wait_readable(sock, None if idle_s is None else time.monotonic() + idle_s):
        raise ProtocolError("idle_timeout", f"no request for {idle_s:g} s: connection closed", fatal=True)
    deadline = None if frame_s is None else time.monotonic() + frame_s  # from the first byte on
    head = _read_exact(sock, _LEN.size, deadline, frame_s or 0)
    if head is None:
        return None
    (length,) = _LEN.unpack(head)
    if length > MAX_FRAME:
        raise ProtocolError("frame_too_large", f"frame of {length} bytes exceeds {MAX_FRAME}", fatal=True)
    body = _read_exact(sock, length, deadline, frame_s or 0)
    return None if body is None else parse_frame(body)


def good_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -_MAX_ID <= value <= _MAX_ID
    return value is None or (isinstance(value, str) and len(value) <= MAX_ID_CHARS)


def check_request(obj: dict[str, Any]) -> tuple[Any, str, dict[str, Any]]:
    """(id, verb, args) of a request frame; ProtocolError for a bad id, field, verb or args."""
    if not good_id(obj.get("id")):
        raise ProtocolError("bad_frame", f"id must be an integer or a string of at most {MAX_ID_CHARS} characters")
    unknown = [name for name in obj if name not in FIELDS]
    if unknown:
        raise ProtocolError("bad_frame", f"unknown field {shown(unknown[0])} (fields: {', '.join(FIELDS)})")
    verb, args = obj.get("verb"), obj.get("args", {})
    if verb not in VERBS:
        raise ProtocolError("unknown_verb", f"unknown verb {shown(verb)} (verbs: {', '.join(VERBS)})")
    if not isinstance(args, dict):
        raise ProtocolError("bad_args", "args: must be an object")
    return obj.get("id"), verb, args
