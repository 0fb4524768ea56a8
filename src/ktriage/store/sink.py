"""The store as a sink in the publisher's thread (``ingest``): no thread, no queue, no drop.
It imports no driver: what a store raises is the caller's to catch (store/access.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ktriage.model.event import Event
from ktriage.pipeline.bus import Row

if TYPE_CHECKING:
    from ktriage.store.access import Store


class StoreSink:
    """A bus subscriber that stores each batch in the publisher's thread, in chunks (``ingest``: a file's
    events are stored before it is marked ingested, and nothing is queued or dropped). A store error
    reaches the publisher."""

    stage = "store"
    dropped = 0

    def __init__(self, store: Store, chunk: int, tick: Callable[[], None]) -> None:
        """tick: called after each chunk (the progress bar's clock moves on while a long file is stored)."""
        self.store, self.chunk, self.tick = store, chunk, tick
        self.written = 0

    def offer(self, events: list[Event]) -> None:
        for start in range(0, len(events), self.chunk):
            self.written += self.store.insert(events[start:start + self.chunk])
            self.tick()

    def close(self) -> None:
        pass

    def rows(self) -> list[Row]:
        return [("store", "", "written", self.written), ("store", "", "unknown_keys", self.store.unknown_keys)]
