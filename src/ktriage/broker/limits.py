"""The broker's limits in one place: how many connections and clients it holds,
how long it waits for a peer, how much it reads. The stats verb reports them;
README's broker paragraph and docs/ARCHITECTURE.md describe them."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class BrokerLimits:
    connections: int = 128  # Unix socket connections at once; more are answered "busy" and closed
    http_connections: int = 64  # HTTP connections at once; more get 503 "busy"
    http_clients: int = 64  # named HTTP clients alive at once; a new name over it gets 429
    # no request for this long: a socket connection is closed (not while it streams); an HTTP client with
    # no request in flight and no open stream is freed with its subscriptions
    idle_timeout_s: float = 300.0
    frame_timeout_s: float = 5.0  # a frame must be complete this long after its first byte
    http_request_timeout_s: float = 10.0  # an HTTP request (line, headers, body) must be complete this long after
    #                                       the connection opened
    write_timeout_s: float = 60.0  # a peer that takes no reply or pushed event for this long is disconnected
    http_body: int = 256 << 10  # bytes of an HTTP request body
    http_head: int = 80 << 10  # bytes of an HTTP request line and headers
    max_pids: int = 8192  # pids in one set_pids

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Gate:
    """At most cap holders at once; every refusal is counted."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.active = 0
        self.refused = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.active >= self.cap:
                self.refused += 1
                return False
            self.active += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.active -= 1
