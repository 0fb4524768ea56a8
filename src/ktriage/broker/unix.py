"""The broker's Unix socket: who may connect, how many at once, how long a peer
may take.

Peers are checked with SO_PEERCRED (root, or a member of the broker's group).
At most BrokerLimits.connections are served at once: one more is answered ``busy``
and closed by the accepting thread, without a thread of its own, and counted.
A connection waits at most idle_timeout_s for its next request (not while it
streams: a streaming client may stay silent), and a frame must be complete
frame_timeout_s after its first byte; either timeout is answered and the
connection closed. A peer that takes no reply or pushed event for
write_timeout_s is disconnected. When a connection ends, its client and every
resource it held are freed.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ktriage.broker.clients import BrokerClient
from ktriage.broker.limits import BrokerLimits, Gate
from ktriage.broker.protocol import MAX_FRAME, ProtocolError, encode, read_frame_within, wait_readable


class SocketHost(Protocol):
    """What the socket side uses of the broker (server.Broker), so it needs nothing of the server."""

    stopping: threading.Event

    def handle(self, client: BrokerClient, frame: dict[str, Any], start_stream: Callable[[], None] | None = None
               ) -> dict[str, Any]: ...

    def allowed(self, pid: int, uid: int, gid: int) -> bool: ...

    def new_client(self, uid: int) -> BrokerClient: ...

    def drop_client(self, client: BrokerClient) -> None: ...

log = logging.getLogger(__name__)
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_ACCEPT_POLL_S = 0.5
_LINGER_S = 1.0


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    return _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))


def _refuse(conn: socket.socket, error: ProtocolError) -> None:
    """Answer error and close, never blocking: the answer is best effort (a full buffer or a gone peer loses it)."""
    conn.setblocking(False)
    try:
        conn.send(encode(error.reply(None)))
    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
        pass  # the peer cannot take it; it is closed either way
    conn.close()


class Connection:
    """One peer: replies and pushed events share the socket under one lock."""

    def __init__(self, conn: socket.socket, client: BrokerClient, broker: SocketHost) -> None:
        self.conn, self.client, self.broker = conn, client, broker
        self.send_lock = threading.Lock()

    def send(self, obj: dict) -> None:
        data = encode(obj)
        if len(data) > MAX_FRAME + 4:  # the peer could not read it: say so instead
            data = encode(ProtocolError("reply_too_large", f"the reply of {len(data)} bytes exceeds "
                                                           f"{MAX_FRAME}").reply(obj.get("id")))
        with self.send_lock:
            self.conn.sendall(data)

    def start_stream(self) -> None:
        if self.client.streaming:
            return
        self.client.streaming = True
        threading.Thread(target=self._push, name=f"ktriage-push-{self.client.name}", daemon=True).start()

    def _push(self) -> None:
        try:
            while not self.client.closed and not self.broker.stopping.is_set():
                for item in self.client.take(0.5, limit=256):
                    self.send(item)
        except OSError as exc:  # gone, or took nothing for write_timeout_s: end the whole connection
            log.debug("%s: push ended: %s", self.client.name, exc)
            with contextlib.suppress(OSError):  # already closed by the request thread: nothing left to end
                self.conn.shutdown(socket.SHUT_RDWR)

    def requests(self, limits: BrokerLimits) -> None:
        while not self.broker.stopping.is_set():
            idle = None if self.client.streaming else limits.idle_timeout_s
            try:
                frame = read_frame_within(self.conn, idle, limits.frame_timeout_s)
            except ProtocolError as exc:
                self.send(exc.reply(None))
                if exc.fatal:
                    self._linger(limits.frame_timeout_s)
                    return
                continue
            if frame is None:
                return
            self.send(self.broker.handle(self.client, frame, self.start_stream))


    def _linger(self, most_s: float) -> None:
        """End our side, then read (and drop) what the peer still sends for a moment: closing with unread
        bytes would reset the connection before the peer reads the answer."""
        self.conn.shutdown(socket.SHUT_WR)
        deadline, drained = time.monotonic() + min(most_s, _LINGER_S), 0
        while drained < MAX_FRAME and wait_readable(self.conn, deadline):
            chunk = self.conn.recv(65536)
            if not chunk:
                return
            drained += len(chunk)


class UnixApi:
    def __init__(self, broker: SocketHost, limits: BrokerLimits) -> None:
        self.broker, self.limits = broker, limits
        self.gate = Gate(limits.connections)
        self.accept_errors = 0
        self._last_warning = 0.0

    def accept(self, listener: socket.socket) -> None:
        listener.settimeout(_ACCEPT_POLL_S)  # so that a stop is seen
        while not self.broker.stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self.broker.stopping.is_set() or listener.fileno() < 0:
                    return
                self._accept_failed(exc)
                continue
            if not self.gate.enter():
                _refuse(conn, ProtocolError("busy", f"the broker serves at most {self.gate.cap} connections "
                                                    "at once: try again later"))
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _accept_failed(self, exc: OSError) -> None:
        """Out of descriptors or memory: counted, warned about every 10 s at most, and retried shortly."""
        self.accept_errors += 1
        if time.monotonic() - self._last_warning > 10:
            self._last_warning = time.monotonic()
            log.warning("broker: accepting a connection failed (%s); %d failures so far", exc, self.accept_errors)
        time.sleep(0.1)

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(self.limits.write_timeout_s)
            pid, uid, gid = peer_credentials(conn)
            if not self.broker.allowed(pid, uid, gid):
                _refuse(conn, ProtocolError("forbidden", f"uid {uid} may not use the broker (root or the "
                                                         "broker group only)"))
                return
            client = self.broker.new_client(uid)
            try:
                Connection(conn, client, self.broker).requests(self.limits)
            except OSError as exc:
                log.debug("%s: connection ended: %s", client.name, exc)
            finally:
                self.broker.drop_client(client)
        finally:
            conn.close()
            self.gate.leave()

    def stats(self) -> dict[str, int]:
        return {"active": self.gate.active, "refused": self.gate.refused, "accept_errors": self.accept_errors}
