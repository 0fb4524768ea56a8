"""`ktriage ingest --jobs N`: files read by N worker processes, handed back in the order given.

The workers are forked from the ingest (the ``fork`` start method, named: a worker starts in
milliseconds with the rules already compiled, and nothing is pickled to start it); each runs
:meth:`FileReader.detected` (read, normalize, order, rules) and sends back the events and
detections of one file. The parent alone hashes, stores and reports, in the order the files
were given, so the rows, the report lines and their order are those of ``--jobs 1``.

Bounded: at most ``window`` files (4 per worker) are submitted and not yet taken, and once
every worker has one, no more than ``budget`` bytes of input (a file's events in memory grow
with its size); the parent then waits for the oldest, nothing is dropped. A worker that dies (killed, or a crash in native code) breaks the pool: the oldest
file in flight is then read again alone in a new worker, and when that one dies too it is the
file's outcome (:class:`WorkerDied`, reported as its error); the other files in flight are
read again in a new pool. ``counts`` keeps what happened (submitted, pool_broken, died).
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ktriage.commands.ingest_read import Detected, FileReader, WorkerDied

_reader: FileReader | None = None  # the worker's own, inherited at fork


@dataclass
class Job:
    """One file in the pool. sha None: nothing to read, outcome is already its result."""

    path: Path
    index: int
    sha: str | None
    size: int = 0  # bytes of input
    outcome: Any = None  # Detected, WorkerDied, or the FileResult of a file not read
    future: Future[Detected] | None = field(default=None, repr=False)


def _install(reader: FileReader) -> None:
    global _reader
    _reader = reader


def _read(path: Path, sha: str) -> Detected:
    assert _reader is not None, "a worker of ReaderPool"
    return _reader.detected(path, sha)


def _lost(future: Future[Detected]) -> bool:
    """Whether a future of a broken pool has no result (failed, cancelled, or still to fail)."""
    return not future.done() or future.cancelled() or future.exception() is not None


def _how(exit_codes: list[int | None]) -> str:
    """How the worker died, from its exit status (a negative one is the signal that ended it)."""
    code = next((c for c in exit_codes if c), None)
    if code is None:
        return "it ended without a result"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


WINDOW_PER_WORKER = 4
BUDGET = 512 << 20


class ReaderPool:
    def __init__(self, jobs: int, reader: FileReader, budget: int = BUDGET) -> None:
        self.jobs, self.reader, self.window, self.budget = jobs, reader, WINDOW_PER_WORKER * jobs, budget
        self.counts: Counter[str] = Counter()
        self._jobs: deque[Job] = deque()  # in the order given
        self._reads, self._bytes = 0, 0  # jobs in flight that are read, and their input bytes
        self._pool = self._new_pool(jobs)

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_install,
                                   initargs=(self.reader,))

    def __enter__(self) -> ReaderPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._pool.shutdown(wait=kind is None, cancel_futures=True)  # on an error or Ctrl-C, do not wait for reads

    def put(self, job: Job) -> None:
        if job.sha is not None:
            job.future = self._pool.submit(_read, job.path, job.sha)
            self.counts["submitted"] += 1
            self._reads += 1
            self._bytes += job.size
        self._jobs.append(job)

    def full(self) -> bool:
        return len(self._jobs) >= self.window or self._reads >= self.jobs and self._bytes >= self.budget

    def pending(self) -> bool:
        return bool(self._jobs)

    def take(self) -> Job:
        """The oldest job with its outcome (waits for it)."""
        job = self._jobs.popleft()
        if job.future is not None:
            self._reads -= 1
            self._bytes -= job.size
            try:
                job.outcome = job.future.result()
            except BrokenProcessPool:
                job.outcome = self._after_a_death(job)
        return job

    def _after_a_death(self, job: Job) -> Detected | WorkerDied:
        """The pool broke while job was in flight: job read again alone, the others in a new pool."""
        self.counts["pool_broken"] += 1
        self._pool.shutdown(wait=True, cancel_futures=True)
        outcome = self._alone(job)
        self._pool = self._new_pool(self.jobs)
        for other in self._jobs:
            if other.future is not None and _lost(other.future):
                other.future = self._pool.submit(_read, other.path, other.sha)
        return outcome

    def _alone(self, job: Job) -> Detected | WorkerDied:
        pool = self._new_pool(1)
        try:
            return pool.submit(_read, job.path, job.sha).result()
        except BrokenProcessPool:
            self.counts["died"] += 1
            return WorkerDied(_how(_exit_codes(pool)))
        finally:
            pool.shutdown(wait=True)


def _exit_codes(pool: ProcessPoolExecutor) -> list[int | None]:
    """The exit status of the pool's workers. The pool's own thread reaps them, so the status
    is waited for a moment rather than read at once."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    deadline = time.monotonic() + 5
    while any(p.exitcode is None for p in workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    return [p.exitcode for p in workers]
