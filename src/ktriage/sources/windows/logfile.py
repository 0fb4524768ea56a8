"""One Windows log file as a pipeline source.

Its records are read by what the file holds (logs.records), mapped onto the
model (logs.normalize), ordered by time, numbered from 1 (the order the rules
see them in: replay sorts by seq) and given their actors' parents (lineage).
A file is one unit: the first poll delivers all its events, the next ones none.
Nothing in the file raises: every unreadable chunk, record or member is a
located error in its :class:`FileResult` (the first KEPT_ERRORS kept, all
counted), and the events read before a read error are kept.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ktriage.model.event import Event
from ktriage.pipeline.bus import Row
from ktriage.render.progress import Progress
from ktriage.sources.reading import ReadLimits, printable
from ktriage.sources.windows.lineage import fill_parents
from ktriage.sources.windows.logs import RecordError, Skipped, normalize, records

PROGRESS_TICK = 1024  # records between the progress bar's updates within a file
SEVERE = 5  # DESIGN §3: suspicious and above
KEPT_ERRORS = 100  # per file; the rest are counted


@dataclass
class FileResult:
    path: Path
    events: int = 0
    detections: int = 0
    unmapped: int = 0
    errors: list[RecordError] = field(default_factory=list)  # the first KEPT_ERRORS
    error_count: int = 0
    skipped_members: int = 0  # archive members that are not event logs
    found: Counter[tuple[str, int]] = field(default_factory=Counter)  # detections by (name, severity)
    skipped: bool = False  # already ingested
    ingested: bool = False  # stored and marked (an empty log too)

    @property
    def where(self) -> str:
        return printable(str(self.path))

    @property
    def complete(self) -> bool:
        """Everything in the file was read (or it was ingested before)."""
        return self.error_count == 0

    @property
    def severe(self) -> int:
        """Detections of severity 5 or more."""
        return sum(n for (_name, severity), n in self.found.items() if severity >= SEVERE)

    def add_error(self, error: RecordError) -> None:
        self.error_count += 1
        if len(self.errors) < KEPT_ERRORS:
            self.errors.append(error)


class LogFileSource:
    def __init__(self, path: Path, sha: str, limits: ReadLimits, progress: Progress | None = None) -> None:
        """progress: the bar to count records on as they are read."""
        self.host = ""  # each event names its log's computer
        self.source = f"evtx:{sha[:12]}"
        self.path, self.limits, self.progress = path, limits, progress
        self.result = FileResult(path)
        self.delivered = 0
        self._done = False

    def start(self) -> None:
        pass

    def poll(self, _timeout_ms: int) -> list[Event]:
        if self._done:
            return []
        self._done = True
        events: list[Event] = []
        try:
            self._read(events)
        except OSError as exc:  # the file went away or the disk failed: what was read is kept
            self.result.add_error(RecordError(self.result.where, f"cannot read further: {exc.strerror or exc}"))
        events.sort(key=lambda e: (e["ts"], e["seq"]))
        for i, ev in enumerate(events, 1):
            ev["seq"] = i
        fill_parents(events)
        self.delivered = len(events)
        return events

    def stop(self) -> None:
        self._done = True

    def close(self) -> None:
        pass

    def rows(self) -> list[Row]:
        r = self.result
        return [("read", "", "events", self.delivered), ("read", "", "unmapped", r.unmapped),
                ("read", "", "errors", r.error_count), ("read", "", "skipped_members", r.skipped_members)]

    def _read(self, events: list[Event]) -> None:
        counted = 0  # events already on the progress bar
        try:
            for n, rec in enumerate(records(self.path, self.limits), 1):
                if isinstance(rec, RecordError):
                    self.result.add_error(rec)
                elif isinstance(rec, Skipped):
                    self.result.skipped_members += 1
                else:
                    ev = self._normalized(rec)
                    if ev is not None:
                        events.append(ev)
                if self.progress is not None and n % PROGRESS_TICK == 0:
                    self.progress.update(events=len(events) - counted)
                    counted = len(events)
        finally:
            if self.progress is not None:
                self.progress.update(events=len(events) - counted)

    def _normalized(self, rec: tuple[int, dict[str, Any], dict[str, Any]]) -> Event | None:
        try:
            ev = normalize(rec[1], rec[2], self.source, rec[0])
        except (ValueError, TypeError, AttributeError) as exc:  # a shape normalize did not foresee
            self.result.add_error(RecordError(f"{self.result.where} record {rec[0]}", f"cannot normalize: {exc}"))
            return None
        if ev is None:
            self.result.unmapped += 1
        return ev
