"""The event bus: fan-out of event batches to subscribers with bounded queues.

Drop policy: a subscriber's queue holds at most ``capacity`` events; a batch
that does not fit is dropped whole (newest dropped, oldest kept, so what a
subscriber receives stays in order) and counted in that subscriber's
``dropped``. A slow subscriber never blocks the publisher or the others.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from ktriage.model.event import Event


class Subscription:
    def __init__(self, name: str, capacity: int, accept: Callable[[Event], bool] | None = None) -> None:
        self.name = name
        self.capacity = capacity
        self.accept = accept
        self.pending = 0
        self.dropped = 0
        self.closed = False
        self._batches: deque[list[Event]] = deque()
        self._cond = threading.Condition()

    def offer(self, events: list[Event]) -> None:
        if self.accept is not None:
            events = [e for e in events if self.accept(e)]
        if not events:
            return
        with self._cond:
            if self.pending + len(events) > self.capacity:
                self.dropped += len(events)
                return
            self._batches.append(events)
            self.pending += len(events)
            self._cond.notify()

    def take(self, timeout: float) -> list[Event]:
        """Every pending event (in order), waiting up to timeout for one."""
        with self._cond:
            if not self._batches and not self.closed:
                self._cond.wait(timeout)
            out = [e for batch in self._batches for e in batch]
            self._batches.clear()
            self.pending = 0
            return out

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class Bus:
    def __init__(self) -> None:
        self.subscriptions: list[Subscription] = []

    def subscribe(self, name: str, capacity: int, accept: Callable[[Event], bool] | None = None) -> Subscription:
        sub = Subscription(name, capacity, accept)
        self.subscriptions.append(sub)
        return sub

    def publish(self, events: list[Event]) -> None:
        if not events:
            return
        for sub in self.subscriptions:
            sub.offer(events)

    def close(self) -> None:
        for sub in self.subscriptions:
            sub.close()
