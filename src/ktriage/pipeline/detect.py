"""The detection stage: the rules over each batch a source delivers, then the state checks.

Detections are events: the stage returns them to be delivered with the batch
that completed them. Detections of the rules and of the checks share one
sequence (``next_seq``), so ``(host, source, seq)`` names one detection.
"""

from __future__ import annotations

from typing import Protocol

from ktriage.detect.engine import Engine
from ktriage.model.event import Event
from ktriage.pipeline.bus import Row


class StateCheck(Protocol):
    """A check of state no event shows (the sensor's own integrity, losses), run after each batch."""

    def start(self) -> None:
        """Once the pipeline's source has started."""

    def check(self, final: bool) -> list[Event]: ...


class Detector:
    def __init__(self, engine: Engine, fresh_per_source: bool = False) -> None:
        """fresh_per_source: a batch of another source than the last starts with no rule state (replay and
        ingest deliver one source per batch: no state crosses recordings or files)."""
        self.engine = engine
        self.checks: list[StateCheck] = []
        self.delivered = 0
        self._fresh_per_source = fresh_per_source
        self._source: str | None = None

    def next_seq(self) -> int:
        self.engine.seq += 1
        return self.engine.seq

    def process(self, events: list[Event], final: bool = False) -> list[Event]:
        """The detections events complete, then those of the checks (final: the last batch, check now)."""
        if self._fresh_per_source and events and events[0].get("source") != self._source:
            self.engine = self.engine.fresh()
            self._source = events[0].get("source")
        out = self.engine.process_many(events)
        for check in self.checks:
            out += check.check(final)
        self.delivered += len(out)
        return out

    def rows(self) -> list[Row]:
        rows = [("detect", "", name, value) for name, value in sorted(self.engine.counters.items())]
        return rows + [("detect", "", "delivered", self.delivered)]
