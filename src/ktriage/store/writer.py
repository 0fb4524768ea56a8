"""The store's single writer thread: drains a bus subscription in batches (the live pipelines)."""

from __future__ import annotations

import logging
import threading

from ktriage.pipeline.bus import Row, Subscription
from ktriage.store.access import DB_ERRORS, Store, describe

log = logging.getLogger(__name__)


class StoreWriter(threading.Thread):
    def __init__(self, store: Store, sub: Subscription, interval: float = 0.2) -> None:
        super().__init__(name="ktriage-store", daemon=True)
        self.store = store
        self.sub = sub
        self.interval = interval
        self.written = 0
        self.failed = 0
        self.error: str | None = None

    def run(self) -> None:
        try:
            self._drain()
        finally:
            if self.error is None and not self.sub.closed:
                self.error = "the store writer stopped unexpectedly (traceback above)"

    def _drain(self) -> None:
        while True:
            events = self.sub.take(self.interval)
            if events:
                self._write(events)
            elif self.sub.closed:
                return

    def _write(self, events: list[dict]) -> None:
        if self.error is not None:
            self.failed += len(events)
            return
        try:
            self.written += self.store.insert(events)
        except DB_ERRORS as exc:
            self.error = f"{self.store.path}: {describe(exc)}"
            self.failed += len(events)
            log.error("store write failed, recording stops storing: %s", self.error)

    def rows(self) -> list[Row]:
        return [("store", "", "written", self.written), ("store", "", "failed", self.failed),
                ("store", "", "unknown_keys", self.store.unknown_keys)]

