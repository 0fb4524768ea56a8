"""`ktriage ingest`: Windows event logs into the store, through the same engine.

Files and directories (walked; links in a walk are reported, not followed) of
EVTX, OTRF/Winlogbeat/evtx-rs JSON, or zip/tar.gz archives of them, each read
by what it holds. Each file is one source: its events are ordered by time,
numbered, run through the Windows rules and stored with their detections. A
file already ingested (same SHA-256) is skipped, so nothing is duplicated.

Evidence is hostile: nothing in a file stops the ingest. Every unreadable
chunk, record, line or member is counted and reported with where it is, and the
next one is read; a bad file does not stop the next file; the summary always
prints. A file with nothing readable is an error and is not marked ingested, so
a good copy of it is read later; a file with some errors is ingested and marked
with its error count. :attr:`FileResult.complete` tells the CLI's exit code.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ktriage import __version__
from ktriage.commands.ingest_read import Detected, FileReader, WorkerDied
from ktriage.detect.engine import Engine
from ktriage.detect.rules import builtin_rules
from ktriage.errors import StoreError, UsageError
from ktriage.pipeline.bus import Bus
from ktriage.render import ingest_summary
from ktriage.render.progress import Progress
from ktriage.sources.reading import ReadLimits, printable
from ktriage.sources.windows.logfile import FileResult
from ktriage.sources.windows.logs import SUFFIXES, RecordError
from ktriage.store.access import database_errors, describe, open_store
from ktriage.store.sink import StoreSink

if TYPE_CHECKING:
    from ktriage.commands.ingest_pool import Job

log = logging.getLogger(__name__)
BATCH = 5000
SHOWN_ERRORS = 5
INGEST_INCOMPLETE = 6  # the exit status when something in the files could not be read (what could was stored)


def _walk(directory: Path) -> list[Path]:
    """Log files under directory, and the links and special files named like them (to report)."""
    found = []
    for f in directory.rglob("*"):
        if f.name.lower().endswith(SUFFIXES) and (f.is_symlink() or not f.is_dir()):
            found.append(f)
    return sorted(found)


def log_files(paths: list[Path]) -> list[Path]:
    """The files to ingest, directories walked; raises UsageError for a missing path."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += _walk(p)
        elif p.is_file():
            out.append(p)
        elif p.exists():
            raise UsageError(f"{printable(str(p))}: not a regular file or directory")
        else:
            raise UsageError(f"{printable(str(p))}: no such file or directory")
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # gone since it was hashed: its worker reports it
        return 0


def _refusal(path: Path, walked: bool) -> str | None:
    """Why a file found by a directory walk is not opened at all."""
    if walked and path.is_symlink():
        return "a symbolic link: not followed in a directory walk (name the file itself to read it)"
    if not path.is_file():
        return "not a regular file: not read"
    return None


def _totals(results: list[FileResult]) -> Counter[str]:
    total: Counter[str] = Counter(files=len(results))
    for r in results:
        total.update(events=r.events, detections=r.detections, errors=r.error_count, skipped=int(r.skipped),
                     ingested=int(r.ingested), unreadable=int(not r.ingested and not r.skipped), unmapped=r.unmapped)
    return total


def default_jobs() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Ingester:
    def __init__(self, db: str, err: TextIO = sys.stderr, limits: ReadLimits = ReadLimits(), jobs: int = 1,
                 progress: bool | None = None, summary_rows: int = ingest_summary.DEFAULT_ROWS) -> None:
        """jobs: worker processes reading files in parallel (1: every file read in this process);
        progress: draw the bar on err (None: when err is a terminal); summary_rows: files shown one by one."""
        self.store = open_store(db)
        self.engine = Engine(builtin_rules("windows"))
        self.err = err
        self.progress = Progress(err, enabled=err.isatty() if progress is None else progress)
        self.bus = Bus()  # the read files' events and detections, to the store
        self.sink = StoreSink(self.store, BATCH, self.progress.refresh)
        self.bus.attach(self.sink)
        self.summary_rows = summary_rows
        # workers count no records on the bar: a forked process must not draw on the parent's terminal
        self.reader = FileReader(self.engine, limits, self.progress if jobs == 1 else None)
        self.jobs = jobs

    def run(self, paths: list[Path]) -> list[FileResult]:
        """Ingest every file; the summary is printed even when the store fails midway."""
        files = log_files(paths)
        named = set(paths)
        results: list[FileResult] = []
        run_id = self._begin_run()
        self.progress.start(len(files))
        try:
            if min(self.jobs, len(files)) > 1:
                self._run_in_workers(files, named, results)
            else:
                for f in files:
                    self._done(results, self.ingest_file(f, walked=f not in named))
        finally:
            self.progress.finish()
            self._end_run(run_id, results)
            self.store.close()
            self._summary(results, len(files))
        return results

    def _begin_run(self) -> int:
        try:
            return self.store.begin_run(socket.gethostname(), "ingest", platform.release(), __version__,
                                        " ".join(sys.argv), {})
        except database_errors() as exc:
            raise StoreError(f"{self.store.path}: {describe(exc)}: nothing ingested") from exc

    def _end_run(self, run_id: int, results: list[FileResult]) -> None:
        """The run's end and counters: the files, what was read of them, the detections, what was stored."""
        total = _totals(results)
        rows = [("ingest", "", name, total[name]) for name in ("files", "ingested", "skipped", "unreadable")]
        rows += [("read", "", "events", total["events"]), ("read", "", "errors", total["errors"]),
                 ("read", "", "unmapped", total["unmapped"]), ("detect", "", "delivered", total["detections"])]
        try:
            self.store.end_run(run_id, rows + self.bus.rows() + self.sink.rows())
        except database_errors() as exc:
            print(f"ktriage: the run's counters were not stored ({describe(exc)})", file=self.err)

    def _done(self, results: list[FileResult], r: FileResult) -> None:
        """A file done, kept and on the bar (its events were counted as they were read, or now)."""
        results.append(r)
        events = r.events if self.reader.progress is None else 0
        self.progress.update(files_done=1, events=events, detections=r.detections, severe=r.severe,
                             errors=r.error_count)

    def _run_in_workers(self, files: list[Path], named: set[Path], results: list[FileResult]) -> None:
        """Files hashed and checked here, read by the workers, stored here in their order: the
        same rows and lines as reading them one by one, a bounded number in flight (ingest_pool)."""
        from ktriage.commands.ingest_pool import Job, ReaderPool  # multiprocessing only when it is used

        with ReaderPool(min(self.jobs, len(files)), self.reader) as pool:
            for i, f in enumerate(files, 1):
                with self._storing(f):
                    prepared = self._prepared(f, walked=f not in named)
                if isinstance(prepared, str):
                    pool.put(Job(f, i, prepared, _size(f)))
                else:
                    pool.put(Job(f, i, None, outcome=prepared))
                while pool.full():
                    self._done(results, self._finished(pool.take()))
                self.progress.refresh()
            while pool.pending():
                self._done(results, self._finished(pool.take()))
        log.info("ingest workers: %s", ", ".join(f"{k} {v}" for k, v in sorted(pool.counts.items())))

    def _finished(self, job: Job) -> FileResult:
        """A file out of the pool: stored when a worker read it, reported either way."""
        if isinstance(job.outcome, FileResult):  # refused or already ingested: nothing was read
            return self._reported(job.outcome)
        if isinstance(job.outcome, WorkerDied):
            result = FileResult(job.path)
            result.add_error(RecordError(result.where, f"the worker process reading it died ({job.outcome.how}): "
                                         "nothing of it stored"))
            return self._reported(result)
        assert job.sha is not None, "a job that was read has its hash"
        with self._storing(job.path):
            if self.store.ingested(job.sha):  # the same content as a file before it in this run
                return self._reported(FileResult(job.path, skipped=True))
            self.progress.update(current=printable(job.path.name))
            return self._committed(job.outcome, job.sha)

    @contextmanager
    def _storing(self, path: Path) -> Iterator[None]:
        try:
            yield
        except database_errors() as exc:  # the store, not the file: later files would fail the same way
            raise StoreError(f"{self.store.path}: {describe(exc)} while storing {printable(str(path))}: the files "
                             "before it are stored, it and the files after it are not (ingest them again)") from exc

    def ingest_file(self, path: Path, walked: bool = False) -> FileResult:
        """One file: read, detect, store, mark; never raises for what the file holds."""
        with self._storing(path):
            prepared = self._prepared(path, walked)
            if isinstance(prepared, FileResult):
                return self._reported(prepared)
            self.progress.update(current=printable(path.name))
            return self._committed(self.reader.detected(path, prepared), prepared)

    def _prepared(self, path: Path, walked: bool) -> FileResult | str:
        """The file's SHA-256 when it is to be read, else its result: refused, or ingested before."""
        result = FileResult(path)
        refusal = _refusal(path, walked)
        try:
            sha = None if refusal else _sha256(path)
        except OSError as exc:
            refusal = f"cannot read: {exc.strerror or exc}"
        if refusal or sha is None:
            result.add_error(RecordError(result.where, refusal or "cannot read"))
            return result
        if self.store.ingested(sha):
            result.skipped = True
            return result
        return sha

    def _committed(self, detected: Detected, sha: str) -> FileResult:
        result, events, detections = detected.result, detected.events, detected.detections
        self.bus.publish(events + detections)
        result.events, result.detections = len(events), len(detections)
        result.found.update((d["name"], d["severity"]) for d in detections)
        if events or result.unmapped or result.error_count == 0:  # something read, or an empty log
            self.store.mark_ingested(sha, result.where, detected.source, result.events, result.detections,
                                     result.error_count, result.unmapped)
            result.ingested = True
        return self._reported(result)

    def _reported(self, result: FileResult) -> FileResult:
        if result.skipped:
            self.progress.clear()
            print(f"ktriage: {result.where}: already ingested, skipped", file=self.err)
        else:
            self._report(result)
        return result

    def _report(self, r: FileResult) -> None:
        self.progress.clear()
        if not r.ingested:
            first = r.errors[0] if r.errors else RecordError(r.where, "nothing readable")
            detail = printable(first.message) if r.error_count == 1 and first.where == r.where else (
                f"nothing readable ({r.error_count} errors)")
            print(f"ktriage: {r.where}: not ingested: {detail}", file=self.err)
            if detail.startswith("nothing readable"):
                self._errors(r)
            return
        if r.events + r.unmapped == 0 and r.error_count == 0:
            print(f"ktriage: {r.where}: an empty log (no records)", file=self.err)
            return
        skipped = f", {r.skipped_members} archive members skipped (not event logs)" if r.skipped_members else ""
        print(f"ktriage: {r.where}: {r.events} events, {r.detections} detections, {r.unmapped} unmapped records, "
              f"{r.error_count} unreadable{skipped}", file=self.err)
        self._errors(r)

    def _errors(self, r: FileResult) -> None:
        for e in r.errors[:SHOWN_ERRORS]:
            print(f"ktriage:   {printable(e.where)}: {printable(e.message)}", file=self.err)
        if r.error_count > SHOWN_ERRORS:
            print(f"ktriage:   … and {r.error_count - SHOWN_ERRORS} more", file=self.err)

    def _summary(self, results: list[FileResult], count: int) -> None:
        total = _totals(results)
        ingest_summary.write(self.err, results, self.summary_rows)
        stopped = f" (stopped after {len(results)} of {count} files)" if len(results) < count else ""
        print(f"ktriage: ingested {total['ingested']} files ({total['skipped']} already ingested, "
              f"{total['unreadable']} not readable): {total['events']} events, {total['detections']} detections, "
              f"{total['errors']} unreadable chunks/records{stopped}", file=self.err)


def main(args: argparse.Namespace) -> int:
    progress = None if args.progress == "auto" else args.progress == "always"
    results = Ingester(args.db, progress=progress, summary_rows=args.summary_rows,
                       jobs=args.jobs or default_jobs()).run(args.paths)
    return 0 if all(r.complete for r in results) else INGEST_INCOMPLETE
