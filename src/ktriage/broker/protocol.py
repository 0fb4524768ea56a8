"""The broker's wire protocol, version 1.

A frame is a 4-byte big-endian length then that many bytes of UTF-8 JSON.
Requests: ``{"id": n, "verb": "...", "args": {...}}``. Replies:
``{"id": n, "ok": true, "result": ...}`` or ``{"id": n, "ok": false, "error":
{"code": "...", "message": "..."}}`` — one error shape everywhere, the HTTP API
included. Pushed events (after ``stream``): ``{"event": {...}, "seq": n}``
where seq is per client, so a gap shows a drop.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

VERSION = 1
MAX_FRAME = 1 << 20
_LEN = struct.Struct(">I")

VERBS = ("hello", "subscribe", "unsubscribe", "set_pids", "get_event", "stream", "stats", "query_image", "shutdown")


class ProtocolError(Exception):
    """A frame or request the broker cannot accept; its code goes back to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def reply(self, request_id: Any) -> dict[str, Any]:
        return {"id": request_id, "ok": False, "error": {"code": self.code, "message": self.message}}


def encode(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode()
    return _LEN.pack(len(data)) + data


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks, have = [], 0
    while have < n:
        chunk = sock.recv(n - have)
        if not chunk:
            return None
        chunks.append(chunk)
        have += len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket) -> dict[str, Any] | None:
    """The next frame, None at end of stream; ProtocolError for a frame that is not one."""
    head = _read_exact(sock, _LEN.size)
    if head is None:
        return None
    (length,) = _LEN.unpack(head)
    if length > MAX_FRAME:
        raise ProtocolError("frame_too_large", f"frame of {length} bytes exceeds {MAX_FRAME}")
    body = _read_exact(sock, length)
    if body is None:
        return None
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError("bad_frame", f"frame is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_frame", "frame is not a JSON object")
    return obj


def check_request(obj: dict[str, Any]) -> tuple[Any, str, dict[str, Any]]:
    verb, args = obj.get("verb"), obj.get("args", {})
    if verb not in VERBS:
        raise ProtocolError("unknown_verb", f"unknown verb {verb!r} (verbs: {', '.join(VERBS)})")
    if not isinstance(args, dict):
        raise ProtocolError("bad_args", "args must be an object")
    return obj.get("id"), verb, args
