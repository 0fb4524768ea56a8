"""Fleet forwarding: ship a host's events and detections to a central store
(PostgreSQL), surviving the database going away.

Every batch goes through a disk spool while the database is unreachable:
numbered JSON-lines files, replayed oldest first when it is back, deleted only
after their insert committed. The central store ignores an event it already has
(unique host, source, seq), so a batch re-sent after a lost acknowledgement is
stored once. The spool is bounded (``max_bytes``): a batch that would exceed it
is dropped and counted. Spool files left by a previous run are replayed first.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from ktriage.errors import StoreError
from ktriage.pipeline.bus import Row, Subscription
from ktriage.store.access import DB_ERRORS, Store, open_store
from ktriage.store.postgres import redact
from ktriage.trust import private_dir

log = logging.getLogger(__name__)


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        private_dir(self.dir, "the spool")  # its files are shipped as this host's events
        self.dropped = 0

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("*.jsonl"))

    def size(self) -> int:
        return sum(f.stat().st_size for f in self.files())

    def append(self, events: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(e) + "\n" for e in events).encode()
        if self.size() + len(data) > self.max_bytes:
            self.dropped += len(events)
            log.warning("spool %s full: %d events dropped", self.dir, len(events))
            return
        files = self.files()
        number = int(files[-1].stem) + 1 if files else 1
        tmp = self.dir / f"{number:012d}.tmp"
        tmp.write_bytes(data)
        tmp.rename(self.dir / f"{number:012d}.jsonl")  # complete files only: a crash leaves no half batch

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text().splitlines() if line]


class Forwarder(threading.Thread):
    def __init__(self, url: str, sub: Subscription, spool_dir: Path, max_spool_bytes: int = 1 << 30,
                 retry_s: float = 1.0) -> None:
        super().__init__(name="ktriage-forward", daemon=True)
        self.url = url
        self.sub = sub
        self.spool = Spool(spool_dir, max_spool_bytes)
        self.retry_s = retry_s
        self.store: Store | None = None
        self.shipped = 0
        self.spooled = 0
        self.reconnects = 0
        self._next_try = 0.0

    def run(self) -> None:
        self._insert([])  # connect (and migrate) at once; a database that is down only delays this
        while True:
            events = self.sub.take(0.5)
            if events:
                self._ship(events)
            else:
                self._drain()
                if self.sub.closed:
                    self._drain(final=True)
                    break
        if self.store is not None:
            self.store.close()

    def _ship(self, events: list[dict[str, Any]]) -> None:
        if self.spool.files() or not self._insert(events):  # keep the order: behind what is spooled
            self.spool.append(events)
            self.spooled += len(events)
        self._drain()

    def _drain(self, final: bool = False) -> None:
        for path in self.spool.files():
            if not final and time.monotonic() < self._next_try and self.store is None:
                return
            if not self._insert(self.spool.read(path)):
                return
            path.unlink()

    def _insert(self, events: list[dict[str, Any]]) -> bool:
        try:
            if self.store is None:
                self.store = open_store(self.url)
                self.reconnects += 1
            self.shipped += self.store.insert(events)
            return True
        except (StoreError, *DB_ERRORS) as exc:
            log.warning("forwarding to %s paused: %s", redact(self.url), str(exc).strip().splitlines()[0])
            self._disconnect()
            return False

    def _disconnect(self) -> None:
        if self.store is not None:
            try:
                self.store.close()
            except DB_ERRORS:
                log.debug("closing a broken connection failed")
        self.store = None
        self._next_try = time.monotonic() + self.retry_s

    def rows(self) -> list[Row]:
        return [("forward", "", "shipped", self.shipped), ("forward", "", "spooled", self.spooled),
                ("forward", "", "spool_dropped", self.spool.dropped), ("forward", "", "connects", self.reconnects),
                ("forward", "", "spool_left", sum(len(Spool.read(f)) for f in self.spool.files()))]
