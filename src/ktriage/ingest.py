"""`ktriage ingest`: Windows event logs into the store, through the same engine.

Files and directories (walked) of EVTX, OTRF/Winlogbeat/evtx-rs JSON, or
archives of them. Each file is one source: its events are ordered by time,
numbered, run through the Windows rules and stored with their detections. A
file already ingested (same SHA-256) is skipped, so nothing is duplicated;
unreadable chunks and records are reported with file and position and the rest
is ingested.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ktriage.detect.engine import Engine
from ktriage.detect.rules import builtin_rules
from ktriage.errors import UsageError
from ktriage.sources.windows import SUFFIXES, RecordError, normalize, records
from ktriage.store.access import open_store

BATCH = 5000
SHOWN_ERRORS = 5


@dataclass
class FileResult:
    path: Path
    events: int = 0
    detections: int = 0
    unmapped: int = 0
    errors: list[RecordError] = field(default_factory=list)
    skipped: bool = False


def log_files(paths: list[Path]) -> list[Path]:
    """The files to ingest, directories walked; raises UsageError for a missing path."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise UsageError(f"{p}: no such file or directory")
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Ingester:
    def __init__(self, db: str, err: TextIO = sys.stderr) -> None:
        self.store = open_store(db)
        self.engine = Engine(builtin_rules("windows"))
        self.err = err
        self.tty = err.isatty()

    def run(self, paths: list[Path]) -> list[FileResult]:
        files = log_files(paths)
        try:
            results = [self._one(i, len(files), f) for i, f in enumerate(files, 1)]
        finally:
            self.store.close()
        total = Counter()
        for r in results:
            total.update(events=r.events, detections=r.detections, errors=len(r.errors), skipped=int(r.skipped))
        print(f"ktriage: ingested {len(files) - total['skipped']} files ({total['skipped']} already ingested): "
              f"{total['events']} events, {total['detections']} detections, {total['errors']} unreadable "
              f"chunks/records", file=self.err)
        return results

    def _one(self, index: int, count: int, path: Path) -> FileResult:
        result = FileResult(path)
        sha = _sha256(path)
        if self.store.ingested(sha):
            result.skipped = True
            print(f"ktriage: {path}: already ingested, skipped", file=self.err)
            return result
        if self.tty:
            print(f"\r[{index}/{count}] {path.name[:60]:<60}", end="", file=self.err, flush=True)
        source = f"evtx:{sha[:12]}"
        events = self._events(path, source, result)
        detections = self.engine.fresh().process_many(events)  # each file on its own
        batch = events + detections
        for start in range(0, len(batch), BATCH):
            self.store.insert(batch[start:start + BATCH])
        result.events, result.detections = len(events), len(detections)
        self.store.mark_ingested(sha, str(path), source, result.events, result.detections, len(result.errors),
                                 result.unmapped)
        self._report(result)
        return result

    def _events(self, path: Path, source: str, result: FileResult) -> list[dict]:
        events = []
        for rec in records(path):
            if isinstance(rec, RecordError):
                result.errors.append(rec)
                continue
            try:
                ev = normalize(rec[1], rec[2], source, rec[0])
            except (ValueError, TypeError, AttributeError) as exc:  # e.g. an unparsable timestamp
                result.errors.append(RecordError(f"{path} record {rec[0]}", f"cannot normalize: {exc}"))
                continue
            if ev is None:
                result.unmapped += 1
            else:
                events.append(ev)
        events.sort(key=lambda e: (e["ts"], e["seq"]))
        for i, ev in enumerate(events, 1):  # the order the engine saw them: replay sorts by seq
            ev["seq"] = i
        return events

    def _report(self, r: FileResult) -> None:
        if self.tty:
            print("\r", end="", file=self.err)
        print(f"ktriage: {r.path}: {r.events} events, {r.detections} detections, {r.unmapped} unmapped records, "
              f"{len(r.errors)} unreadable", file=self.err)
        for e in r.errors[:SHOWN_ERRORS]:
            print(f"ktriage:   {e.where}: {e.message}", file=self.err)
        if len(r.errors) > SHOWN_ERRORS:
            print(f"ktriage:   … and {len(r.errors) - SHOWN_ERRORS} more", file=self.err)
