"""Reading one Windows log file for `ingest`, in the ingest's own process or in a worker
(ingest_pool): the file's source through the Windows rules, no store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ktriage.detect.engine import Engine
from ktriage.model.event import Event
from ktriage.pipeline.detect import Detector
from ktriage.pipeline.pipeline import Pipeline
from ktriage.render.progress import Progress
from ktriage.sources.reading import ReadLimits
from ktriage.sources.windows.logfile import FileResult, LogFileSource


@dataclass(frozen=True)
class WorkerDied:
    """The outcome of a file whose worker process died reading it (ingest_pool)."""

    how: str  # e.g. "killed by SIGKILL"


@dataclass
class Detected:
    """One file read: its result so far, its events in order and their detections (not stored yet)."""

    result: FileResult
    source: str
    events: list[Event]
    detections: list[Event]


class FileReader:
    """Reads one file into events and detections without a store, so it runs in a worker process
    as well as in the ingest's own: the file's source through the Windows rules, with fresh rule state
    per file, so its detections do not depend on what else is read or where."""

    def __init__(self, engine: Engine, limits: ReadLimits, progress: Progress | None = None) -> None:
        """progress: counts records on the bar as they are read (only in the ingest's own process)."""
        self.engine, self.limits, self.progress = engine, limits, progress

    def detected(self, path: Path, sha: str) -> Detected:
        """Never raises for what the file holds."""
        source = LogFileSource(path, sha, self.limits, self.progress)
        delivered = Pipeline(source, Detector(self.engine, fresh_per_source=True)).step(0)
        events = delivered[:source.delivered]
        return Detected(source.result, source.source, events, delivered[source.delivered:])
