"""One pipeline for every command: source → detection stage → bus → sinks.

``record``, ``watch`` and ``serve`` run it over the live sensor, ``detect`` over
stored or captured events, ``ingest`` over each Windows log file. A source
delivers events in the order it saw them; the detection stage appends the
detections they complete; the bus offers the whole batch to each subscriber
(bus.py: the one drop policy). ``rows`` is the run's per-stage counters (the
`stats` table): the source's, the stage's, each queue's drops, each sink's.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from ktriage.model.event import Event
from ktriage.pipeline.bus import Bus, Row
from ktriage.pipeline.detect import Detector


class Source(Protocol):
    host: str
    source: str  # the events' `source`: one recording, one file

    def start(self) -> None: ...

    def poll(self, timeout_ms: int) -> list[Event]:
        """The next events in order, waiting up to timeout_ms for them (0: what is there now)."""

    def stop(self) -> None:
        """No event after what was already produced: the next poll(0) is the last."""

    def close(self) -> None: ...

    def rows(self) -> list[Row]: ...


class Sink(Protocol):
    def rows(self) -> list[Row]: ...


class Pipeline:
    def __init__(self, source: Source, detector: Detector | None = None, bus: Bus | None = None) -> None:
        """bus: one whose subscribers were attached before the source exists (the broker's clients)."""
        self.source = source
        self.detector = detector
        self.bus = bus or Bus()
        self.delivered: Counter[str] = Counter()  # per family, detections included

    def start(self) -> None:
        self.source.start()
        for check in self.detector.checks if self.detector else ():
            check.start()

    def step(self, timeout_ms: int) -> list[Event]:
        """One batch through the stages; returned as well as published."""
        events = self.source.poll(timeout_ms)
        if self.detector is not None:
            events = events + self.detector.process(events, final=timeout_ms == 0)
        for ev in events:
            self.delivered[ev["family"]] += 1
        self.bus.publish(events)
        return events

    def drain(self) -> list[Event]:
        """The source stopped, the last batch through: everything it had produced is delivered."""
        self.source.stop()
        return self.step(0)

    def rows(self, *sinks: Sink | None) -> list[Row]:
        rows = self.source.rows() + (self.detector.rows() if self.detector else []) + self.bus.rows()
        for sink in sinks:
            if sink is not None:
                rows += sink.rows()
        return rows
