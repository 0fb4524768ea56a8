"""The recorder's watchdog: a separate process that sees the sensor stopped or killed.

``ktriage record`` starts it before the sensor (its pid goes into kt_cfg: ktriage's own, not
reported, and a signal to it is tamper like one to the sensor). It runs in its own session and
process group (a stop of the recorder's group or terminal does not stop it) under the name
``ktriage-wd``. The recorder holds the write end of a pipe on its stdin and sends ``run <id>``,
then ``end`` before a clean exit; end of file without ``end`` means the sensor died.

* Stopped (state T or t in /proc/PID/stat) for longer than the bound: a SENSOR_TAMPER_ATTEMPT
  naming the stopper from the pinned signal marks, once per stop.
* Died without ``end`` and the run has no end in the store: a SENSOR_TAMPER_ATTEMPT naming the
  killer from the marks (or "cause unknown"), and the run closed with that reason.

It writes with its own connection, source ``watchdog:<token>``, seq from 1. When the stopped
sensor holds the SQLite write lock, it says so on stderr and retries.
"""

from __future__ import annotations

import argparse
import ctypes
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ktriage.detect.tamper import death_reason, detection, last_fatal, mark_evidence
from ktriage.errors import KtriageError
from ktriage.sensor.sigmarks import STOP_SIGNALS, MarkReader, SignalMark, boot_now, open_reader
from ktriage.sources.linux.procs import read_ppid, state_and_start
from ktriage.store.access import DB_ERRORS, Store, open_store

COMM = b"ktriage-wd"
TICK_S = 0.2
RETRY_S = 1.0
T = TypeVar("T")


class WatchdogProcess:
    """The recorder's handle on its watchdog."""

    def __init__(self, sensor_pid: int, db: str, host: str, token: str, stop_bound: float) -> None:
        argv = [sys.executable, "-m", "ktriage.sources.linux.watchdog", "--sensor-pid", str(sensor_pid), "--db", db,
                "--host", host, "--token", token, "--stop-bound", str(stop_bound)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def begin(self, run_id: int) -> None:
        self._say(f"run {run_id}\n")

    def end(self) -> None:
        """The sensor ends cleanly: the watchdog leaves without a word."""
        self._say("end\n")
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _say(self, line: str) -> None:
        if self.proc.poll() is None and self.proc.stdin:
            try:
                self.proc.stdin.write(line.encode())
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass  # it is gone: the sensor's integrity check reports that


class Watchdog:
    def __init__(self, args: argparse.Namespace, store: Store, marks: MarkReader | None) -> None:
        self.sensor, self.bound = args.sensor_pid, args.stop_bound
        self.host, self.source, self.db = args.host, f"watchdog:{args.token}", args.db
        self.store, self.marks = store, marks
        self.run_id: int | None = None
        self.clean = False
        self.seq = 0
        self.started_boot = boot_now()
        self.stopped_since: float | None = None
        self.stop_reported = False
        found = read_ppid(self.sensor)
        self.sensor_parent = found if found is not None else -1  # its parent killing it is a stop, not tamper

    def loop(self) -> None:
        while self._read_pipe() and not self._kill_seen():
            self._check_stop()
        if not self.clean:
            self._sensor_died()

    def _kill_seen(self) -> bool:
        """A SIGKILL to the sensor: report now, not once its exit (seconds: every BPF link is torn down) closes
        the pipe."""
        mark = self.marks.mark(self.sensor, signal.SIGKILL) if self.marks else None
        return mark is not None and mark.ts_boot >= self.started_boot

    def _read_pipe(self) -> bool:
        """False once the recorder closed its end (clean or not)."""
        ready, _, _ = select.select([sys.stdin.buffer], [], [], TICK_S)
        if not ready:
            return True
        line = sys.stdin.buffer.readline()
        if not line:
            return False
        words = line.split()
        if words[:1] == [b"run"] and len(words) == 2 and words[1].isdigit():
            self.run_id = int(words[1])
        elif words == [b"end"]:
            self.clean = True
            return False
        return True

    def _check_stop(self) -> None:
        found = state_and_start(self.sensor)
        if found is None or found[0] not in "Tt":
            self.stopped_since, self.stop_reported = None, False
            return
        now = time.monotonic()
        self.stopped_since = self.stopped_since or now
        if not self.stop_reported and now - self.stopped_since >= self.bound:
            self.stop_reported = True
            self._report_stop(now - self.stopped_since)

    def _report_stop(self, seen_s: float) -> None:
        stop = self._last_stop()
        if stop is not None:
            lasted = (boot_now() - stop.ts_boot) // 1_000_000
            reason = (f"sensor stopped {lasted / 1000:.1f} s and counting by {stop.name} from {stop.who()}: "
                      f"blind until it resumes")
            self._write(detection(self.host, self.source, self._next(), reason, stop, self.sensor, lasted,
                                  mark_evidence(stop)))
        else:
            reason = f"sensor stopped for {seen_s:.1f} s and counting, by whom unknown (no stop signal seen)"
            self._write(detection(self.host, self.source, self._next(), reason, None, self.sensor,
                                  int(seen_s * 1000)))

    def _last_stop(self) -> SignalMark | None:
        marks = self.marks.marks(self.sensor) if self.marks else []
        stops = [m for m in marks if m.sig in STOP_SIGNALS and m.ts_boot >= self.started_boot]
        return stops[-1] if stops else None

    def _sensor_died(self) -> None:
        marks = self.marks.marks(self.sensor) if self.marks else []
        mark = last_fatal(marks, self.started_boot)
        reason = death_reason(f"sensor (pid {self.sensor})", mark)
        by_parent = mark is not None and mark.sender in (self.sensor_parent, 1)
        if by_parent:
            reason += " (its parent or init: not tamper)"
        if self.run_id is not None and not self._retry(lambda: self.store.end_run_abnormally(self.run_id, reason)):
            return  # the run has an end: the recorder finished it before it went
        if by_parent:
            return
        self._write(detection(self.host, self.source, self._next(), reason, mark, self.sensor, 0,
                              mark_evidence(mark) if mark else []))

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _write(self, det: dict[str, Any]) -> None:
        self._retry(lambda: self.store.insert([det]))

    def _retry(self, write: Callable[[], T]) -> T:
        while True:
            try:
                return write()
            except DB_ERRORS as exc:
                print(f"ktriage-wd: cannot write to {self.db} ({exc}): the stopped sensor may hold its write "
                      f"lock; retrying", file=sys.stderr, flush=True)
                time.sleep(RETRY_S)


def _detach_from_job_control() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(15, COMM, 0, 0, 0)  # PR_SET_NAME
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ktriage-wd", description="watch a ktriage sensor (started by ktriage record)")
    p.add_argument("--sensor-pid", type=int, required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--stop-bound", type=float, default=5.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _detach_from_job_control()
    try:
        store = open_store(args.db)
    except KtriageError as exc:
        print(f"ktriage-wd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    marks = open_reader()
    try:
        Watchdog(args, store, marks).loop()
    finally:
        if marks:
            marks.close()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
