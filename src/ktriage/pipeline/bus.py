"""The event bus: every batch a pipeline delivers, offered to each subscriber in turn.

One drop policy for every subscriber (store writer, forwarder, broker clients):
a subscriber holds at most its capacity of events; an event that does not fit
is dropped — the newest, so what was queued stays whole and in order — and
counted where it happens, in that subscriber's ``dropped``. A slow subscriber
never blocks the publisher or the others. A subscriber that renders in the
publisher's thread (``watch``, an alert line) queues nothing and drops nothing.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from typing import Protocol

from ktriage.model.event import Event

Row = tuple[str, str, str, int]  # stage, family or name, counter, value: a row of the `stats` table


class Subscriber(Protocol):
    stage: str  # what it is, for the run's counters: store, forward, clients, render
    dropped: int

    def offer(self, events: list[Event]) -> None: ...

    def close(self) -> None: ...


class Subscription:
    """A bounded queue of events for a consumer thread (the store writer, the forwarder)."""

    def __init__(self, stage: str, capacity: int, accept: Callable[[Event], bool] | None = None) -> None:
        self.stage = stage
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
            room = self.capacity - self.pending
            if room < len(events):
                self.dropped += len(events) - max(room, 0)
                events = events[:max(room, 0)]
            if events:
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


class Renderer:
    """A subscriber that hands each batch to a function in the publisher's thread (no queue, no drop)."""

    def __init__(self, render: Callable[[list[Event]], None]) -> None:
        self.stage = "render"
        self.dropped = 0
        self._render = render

    def offer(self, events: list[Event]) -> None:
        self._render(events)

    def close(self) -> None:
        pass


class Bus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()  # subscribers (broker clients) come and go while the pump publishes
        self._left: Counter[str] = Counter()  # drops of subscribers that have left, by stage

    def subscribe(self, stage: str, capacity: int, accept: Callable[[Event], bool] | None = None) -> Subscription:
        sub = Subscription(stage, capacity, accept)
        self.attach(sub)
        return sub

    def attach(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.append(subscriber)

    def detach(self, subscriber: Subscriber) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
                self._left[subscriber.stage] += subscriber.dropped

    def publish(self, events: list[Event]) -> None:
        if not events:
            return
        with self._lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub.offer(events)

    def rows(self) -> list[Row]:
        """What each stage's subscribers dropped, those that have left included."""
        dropped = Counter(self._left)
        with self._lock:
            for sub in self._subscribers:
                dropped[sub.stage] += sub.dropped
        return [("queue", stage, "dropped", n) for stage, n in sorted(dropped.items()) if stage != "render"]

    def close(self) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub.close()
