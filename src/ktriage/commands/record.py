"""`ktriage record`: the live sensor into the store, with a live summary.

The live pipeline (sensor → Linux rules and the sensor's checks → bus) into the
store writer (and the forwarder), each detection printed as it happens. Ends on
its duration, Ctrl-C or SIGTERM, then stores what the kernel already sent and
prints per-family counts and every drop (also kept in the ``stats`` table).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ktriage import __version__
from ktriage.errors import StoreError, UsageError
from ktriage.model.event import Event
from ktriage.model.families import KERNEL_FAMILIES
from ktriage.pipeline.bus import Renderer, Row
from ktriage.pipeline.pipeline import Pipeline
from ktriage.pipeline.stop import StopFlag, stop_on_signals
from ktriage.render.detections import alert_line
from ktriage.sensor.sensor import ALL_FAMILIES, SensorOptions
from ktriage.sources.linux.live import POLL_MS, Live, LiveSource, check_pids, live_pipeline, require_root
from ktriage.sources.linux.procs import state_and_start
from ktriage.sources.linux.recovery import unclosed_runs
from ktriage.sources.linux.watchdog import WatchdogProcess
from ktriage.store.access import DB_ERRORS, Store, describe, open_store
from ktriage.store.forwarder import Forwarder
from ktriage.store.writer import StoreWriter

log = logging.getLogger(__name__)

STORE_QUEUE_EVENTS = 1_000_000


@dataclass
class RecordOptions:
    db: str
    duration: float | None = None
    pids: list[int] = field(default_factory=list)
    ring_bytes: int = 16 << 20
    summary_interval: float = 10.0
    families: frozenset[str] = ALL_FAMILIES
    max_depth: int = 0xFFFFFFFF
    forward: str | None = None  # a central store (postgresql://) to ship every event to as well
    spool: Path = Path("/var/lib/ktriage/spool")
    host_id: str | None = None  # the host name written on every row (default: this host's name)
    stop_bound: float = 5.0  # seconds the sensor may be stopped before its watchdog reports it


class Recorder:
    def __init__(self, options: RecordOptions, err: TextIO = sys.stderr) -> None:
        self.options = options
        self.err = err
        self.tty = err.isatty()
        self.watchdog: WatchdogProcess | None = None
        self.run_id: int | None = None

    def run(self) -> int:
        require_root("recording")
        o = self.options
        pids = check_pids(o.pids)
        store = open_store(o.db)
        live = live_pipeline(SensorOptions(ring_bytes=o.ring_bytes, pids=pids, families=o.families,
                                           max_depth=o.max_depth), host=o.host_id)
        try:
            self._start_watchdog(live.source)
            live.pipeline.start()
            return self._record(store, live)
        except BaseException as exc:
            self._close_run_after_error(store, exc)
            raise
        finally:
            if self.watchdog:
                self.watchdog.end()
            live.source.close()
            store.close()

    def _start_watchdog(self, source: LiveSource) -> None:
        """Before the sensor starts: its pid goes into the kernel configuration, which is then frozen."""
        token = source.source.split(":", 1)[1]
        self.watchdog = WatchdogProcess(os.getpid(), self.options.db, source.host, token, self.options.stop_bound)
        source.sensor.options.peer_tgid = self.watchdog.pid

    def _watch_run(self, store: Store, live: Live, run_id: int) -> list[Event]:
        """Tie the run to this process, hand it to the watchdog; earlier runs killed unseen become
        detections now (returned, to be stored and forwarded like any)."""
        self.run_id = run_id
        found = state_and_start(os.getpid())
        assert found is not None and self.watchdog is not None and live.checks.tamper is not None
        store.set_run_process(run_id, os.getpid(), found[1])
        self.watchdog.begin(run_id)
        live.checks.tamper.watchdog = self.watchdog
        assert live.pipeline.detector is not None
        return unclosed_runs(store, live.source.host, live.source.marks, live.source.source,
                             live.pipeline.detector.next_seq)

    def _close_run_after_error(self, store: Store, exc: BaseException) -> None:
        """A run that ends on an error is closed as such, not left open (which means killed)."""
        if self.run_id is None:
            return
        try:
            store.end_run_abnormally(self.run_id, f"error: {exc}")
        except DB_ERRORS as db_exc:
            log.warning("cannot close run %d after %s: %s", self.run_id, exc, db_exc)

    def _record(self, store: Store, live: Live) -> int:
        bus = live.pipeline.bus
        writer = StoreWriter(store, bus.subscribe("store", STORE_QUEUE_EVENTS))
        forwarder = self._forwarder(live.pipeline)
        bus.attach(Renderer(self._alerts))
        probe = live.source.sensor.probe
        assert probe is not None
        run_id = store.begin_run(live.source.host, "ebpf", platform.release(), __version__, " ".join(sys.argv),
                                 probe.works)
        writer.start()
        if forwarder:
            forwarder.start()
        bus.publish(self._watch_run(store, live, run_id))
        try:
            with stop_on_signals() as stop:
                self._loop(live, writer, stop)
            live.pipeline.drain()  # every record the kernel sent
        finally:
            bus.close()
            writer.join()
            if forwarder:
                forwarder.join()
        return self._finish(store, live, writer, run_id, forwarder)

    def _forwarder(self, pipeline: Pipeline) -> Forwarder | None:
        if not self.options.forward:
            return None
        return Forwarder(self.options.forward, pipeline.bus.subscribe("forward", STORE_QUEUE_EVENTS),
                         self.options.spool)

    def _loop(self, live: Live, writer: StoreWriter, stop: StopFlag) -> None:
        sensor = live.source.sensor
        who = f"pids {sorted(sensor.options.pids)} and their children" if sensor.options.pids else "this host"
        assert sensor.probe is not None
        print(f"ktriage: kernel {platform.release()}: {sensor.probe.summary()}", file=self.err)
        print(f"ktriage: recording {who} into {self.options.db} (Ctrl-C to stop)", file=self.err, flush=True)
        start = last = time.monotonic()
        deadline = start + self.options.duration if self.options.duration else None
        while not stop.requested and writer.error is None and writer.is_alive():
            live.pipeline.step(POLL_MS)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if now - last >= (1.0 if self.tty else self.options.summary_interval):
                self._live_line(now - start, live)
                last = now
        if self.tty:
            print(file=self.err)

    def _alerts(self, events: list[Event]) -> None:
        """Detections as they happen, one line each (the live summary line is redrawn after them)."""
        for det in (e for e in events if e["family"] == "detection"):
            print(("\r\033[K" if self.tty else "") + "ktriage: detection: " + alert_line(det), file=self.err,
                  flush=True)

    def _live_line(self, elapsed: float, live: Live) -> None:
        _, lost = live.source.sensor.counters()
        counts = live.pipeline.delivered
        total = sum(counts.values())
        fams = " ".join(f"{f}={counts[f]}" for f in (*KERNEL_FAMILIES, "detection"))
        line = f"{elapsed:6.0f}s  events={total} ({total / max(elapsed, 1e-9):.0f}/s)  {fams}  lost={sum(lost.values())}"
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=self.err, flush=True)

    def _finish(self, store: Store, live: Live, writer: StoreWriter, run_id: int,
                forwarder: Forwarder | None) -> int:
        rows = live.pipeline.rows(writer, forwarder)
        stats_error = self._end_run(store, run_id, rows)
        self._print_summary(rows, live)
        if forwarder:
            print("forwarded " + ", ".join(f"{c} {v}" for _s, _f, c, v in forwarder.rows()), file=self.err)
        if stats_error:
            print(f"ktriage: the run's counters were not stored ({stats_error}): the lines above are their only "
                  "record", file=self.err)
        if writer.error is not None:
            raise StoreError(f"storing stopped: {writer.error}; {writer.failed} events after it were not stored")
        return 0

    @staticmethod
    def _end_run(store: Store, run_id: int, rows: list[Row]) -> str | None:
        """Store the run's end and counters; the reason when that is not possible (a full disk)."""
        try:
            store.end_run(run_id, rows)
        except DB_ERRORS as exc:
            return describe(exc)
        return None

    def _print_summary(self, rows: list[Row], live: Live) -> None:
        """The run's counters as stored (rows), per family then in one line."""
        stat = {(stage, fam, name): value for stage, fam, name, value in rows}
        p = lambda *a: print(*a, file=self.err)  # noqa: E731
        p(f"{'family':<10} {'events':>10} {'records':>10} {'bpf sent':>10} {'bpf lost':>10}")
        for f in KERNEL_FAMILIES:
            p(f"{f:<10} {live.pipeline.delivered[f]:>10} {stat['decode', f, 'received']:>10} "
              f"{stat['bpf', f, 'sent']:>10} {stat['bpf', f, 'lost']:>10}")
        lost = sum(stat["bpf", f, "lost"] for f in KERNEL_FAMILIES)
        p(f"detections {live.pipeline.delivered['detection']}")
        p(f"decode errors {stat['decode', '', 'errors']}, queue dropped {stat['queue', 'store', 'dropped']}, "
          f"stored {stat['store', '', 'written']}, store failed {stat['store', '', 'failed']}, lost in kernel {lost}")


def main(args: argparse.Namespace) -> int:
    if args.forward and not args.forward.startswith(("postgresql://", "postgres://")):
        raise UsageError(f"--forward {args.forward}: give a postgresql:// URL")
    options = RecordOptions(db=args.db, duration=args.duration, pids=args.pid, ring_bytes=args.ring_size,
                            summary_interval=args.summary_interval, max_depth=args.depth, forward=args.forward,
                            spool=args.spool, host_id=args.host_id, stop_bound=args.stop_bound)
    if args.streams is not None:
        options.families = args.streams
    return Recorder(options).run()
