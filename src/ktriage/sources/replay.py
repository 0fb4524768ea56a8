"""Stored or recorded events as a source, in the order live saw them; the rules replayed over them.

Live, the engine sees each source's events in sequence order (an exec record's
process event before its derived image event, which shares its seq). Replay
restores exactly that order, one source (one recording) at a time with fresh
engine state, so replayed detections equal live ones.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from ktriage.detect.engine import Engine
from ktriage.detect.rules import Rule
from ktriage.errors import UsageError
from ktriage.model.check import model_fields, problem
from ktriage.model.event import Event, live_order
from ktriage.model.families import FAMILIES
from ktriage.pipeline.bus import Renderer, Row
from ktriage.pipeline.detect import Detector
from ktriage.pipeline.pipeline import Pipeline
from ktriage.store.readonly import ReadOnly
from ktriage.store.reads import stored_rows


def by_source(events: Iterable[Event]) -> Iterator[list[Event]]:
    """Events grouped per source (in order of each source's first event), each sorted as live saw them."""
    groups: dict[str, list[Event]] = defaultdict(list)
    for ev in events:
        groups[ev.get("source") or ""].append(ev)
    for evs in sorted(groups.values(), key=lambda g: min(e["ts"] for e in g)):
        yield sorted(evs, key=live_order)


def stored_events(db: ReadOnly) -> Iterator[Event]:
    tables = db.tables()
    for family in FAMILIES:
        if family == "detection" or family not in tables:
            continue
        for row_id, ev in stored_rows(db, family):
            wrong = problem(ev, typed=False)
            if wrong:  # a database is evidence too: someone else may have made it
                raise UsageError(f"{db.name}: {family} row {row_id}: not an event: {wrong}")
            yield ev


def jsonl_events(path: Path) -> Iterator[Event]:
    """The events of a JSON-lines capture (stored detections are left out: replay makes its own);
    UsageError naming the line for the first line that is not an event of the model."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            ev = _event(raw, f"{path}:{n}")
            if ev["family"] != "detection":
                yield model_fields(ev)


def _event(raw: bytes, where: str) -> Event:
    try:
        ev = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not a JSON line: {exc.msg}") from None
    except RecursionError:
        raise UsageError(f"{where}: not a JSON line: nested too deep") from None
    wrong = problem(ev)
    if wrong:
        raise UsageError(f"{where}: not an event: {wrong}")
    return ev


class ReplaySource:
    """Stored or captured events as a pipeline source: one recording (source) per poll, in live order."""

    host = ""
    source = "replay"

    def __init__(self, events: Iterable[Event]) -> None:
        self._groups = by_source(events)
        self.exhausted = False
        self.events = 0

    def start(self) -> None:
        pass

    def poll(self, _timeout_ms: int) -> list[Event]:
        group = next(self._groups, None)
        if group is None:
            self.exhausted = True
            return []
        self.events += len(group)
        return group

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass

    def rows(self) -> list[Row]:
        return [("replay", "", "events", self.events)]


def replay(events: Iterable[Event], rules: list[Rule]) -> list[Event]:
    """The detections of the rules over events, each recording with fresh rule state (as live)."""
    source = ReplaySource(events)
    pipeline = Pipeline(source, Detector(Engine(rules), fresh_per_source=True))
    found: list[Event] = []
    pipeline.bus.attach(Renderer(lambda batch: found.extend(e for e in batch if e["family"] == "detection")))
    while not source.exhausted:
        pipeline.step(0)
    return found
