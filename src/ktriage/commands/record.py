"""`ktriage record`: the live sensor into the store, with a live summary.

live source (sensor + decoder) -> bus -> store writer. Ends on its duration,
Ctrl-C or SIGTERM, then stores what the kernel already sent and prints
per-family counts and every drop (also kept in the ``stats`` table).
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ktriage import __version__
from ktriage.errors import StoreError
from ktriage.model.event import Event
from ktriage.model.families import KERNEL_FAMILIES
from ktriage.pipeline.bus import Bus
from ktriage.pipeline.runstats import sink_rows, source_rows
from ktriage.render.detections import alert_line
from ktriage.sensor.procs import state_and_start
from ktriage.sensor.sensor import ALL_FAMILIES, SensorOptions
from ktriage.sources.linux.live import POLL_MS, LiveSource, StopFlag, check_pids, require_root, stop_on_signals
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
        source = LiveSource(SensorOptions(ring_bytes=o.ring_bytes, pids=pids, families=o.families,
                                          max_depth=o.max_depth), host=o.host_id)
        try:
            self._start_watchdog(source)
            source.start()
            return self._record(store, source)
        except BaseException as exc:
            self._close_run_after_error(store, exc)
            raise
        finally:
            if self.watchdog:
                self.watchdog.end()
            source.close()
            store.close()

    def _start_watchdog(self, source: LiveSource) -> None:
        """Before the sensor starts: its pid goes into the kernel configuration, which is then frozen."""
        token = source.source.split(":", 1)[1]
        self.watchdog = WatchdogProcess(os.getpid(), self.options.db, source.host, token, self.options.stop_bound)
        source.sensor.options.peer_tgid = self.watchdog.pid

    def _watch_run(self, store: Store, source: LiveSource, run_id: int) -> list[Event]:
        """Tie the run to this process, hand it to the watchdog; earlier runs killed unseen become
        detections now (returned, to be stored and forwarded like any)."""
        self.run_id = run_id
        found = state_and_start(os.getpid())
        assert found is not None and self.watchdog is not None and source.tamper is not None
        store.set_run_process(run_id, os.getpid(), found[1])
        self.watchdog.begin(run_id)
        source.tamper.watchdog = self.watchdog
        return unclosed_runs(store, source.host, source.marks, source.source, source.next_detection_seq)

    def _close_run_after_error(self, store: Store, exc: BaseException) -> None:
        """A run that ends on an error is closed as such, not left open (which means killed)."""
        if self.run_id is None:
            return
        try:
            store.end_run_abnormally(self.run_id, f"error: {exc}")
        except DB_ERRORS as db_exc:
            log.warning("cannot close run %d after %s: %s", self.run_id, exc, db_exc)

    def _record(self, store: Store, source: LiveSource) -> int:
        bus = Bus()
        writer = StoreWriter(store, bus.subscribe("store", STORE_QUEUE_EVENTS))
        forwarder = self._forwarder(bus)
        probe = source.sensor.probe
        assert probe is not None
        run_id = store.begin_run(source.host, "ebpf", platform.release(), __version__, " ".join(sys.argv),
                                 probe.works)
        writer.start()
        if forwarder:
            forwarder.start()
        bus.publish(self._watch_run(store, source, run_id))
        try:
            with stop_on_signals() as stop:
                self._loop(source, bus, writer, stop)
            source.sensor.detach()
            last = source.poll(0)  # every record the kernel sent
            bus.publish(last)
            self._alerts(last)
        finally:
            bus.close()
            writer.join()
            if forwarder:
                forwarder.join()
        return self._finish(store, source, writer, run_id, forwarder)

    def _forwarder(self, bus: Bus) -> Forwarder | None:
        if not self.options.forward:
            return None
        return Forwarder(self.options.forward, bus.subscribe("forward", STORE_QUEUE_EVENTS), self.options.spool)

    def _loop(self, source: LiveSource, bus: Bus, writer: StoreWriter, stop: StopFlag) -> None:
        sensor = source.sensor
        who = f"pids {sorted(sensor.options.pids)} and their children" if sensor.options.pids else "this host"
        assert sensor.probe is not None
        print(f"ktriage: kernel {platform.release()}: {sensor.probe.summary()}", file=self.err)
        print(f"ktriage: recording {who} into {self.options.db} (Ctrl-C to stop)", file=self.err, flush=True)
        start = last = time.monotonic()
        deadline = start + self.options.duration if self.options.duration else None
        while not stop.requested and writer.error is None and writer.is_alive():
            events = source.poll(POLL_MS)
            bus.publish(events)
            self._alerts(events)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if now - last >= (1.0 if self.tty else self.options.summary_interval):
                self._live_line(now - start, source)
                last = now
        if self.tty:
            print(file=self.err)

    def _alerts(self, events: list[dict]) -> None:
        """Detections as they happen, one line each (the live summary line is redrawn after them)."""
        for det in (e for e in events if e["family"] == "detection"):
            print(("\r\033[K" if self.tty else "") + "ktriage: detection: " + alert_line(det), file=self.err,
                  flush=True)

    def _live_line(self, elapsed: float, source: LiveSource) -> None:
        _, lost = source.sensor.counters()
        total = sum(source.counts.values())
        fams = " ".join(f"{f}={source.counts[f]}" for f in (*KERNEL_FAMILIES, "detection"))
        line = f"{elapsed:6.0f}s  events={total} ({total / max(elapsed, 1e-9):.0f}/s)  {fams}  lost={sum(lost.values())}"
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=self.err, flush=True)

    def _finish(self, store: Store, source: LiveSource, writer: StoreWriter, run_id: int,
                forwarder: Forwarder | None) -> int:
        sent, lost = source.sensor.counters()
        rows = source_rows(source, sent, lost) + sink_rows(writer, forwarder)
        dropped = writer.sub.dropped
        stats_error = self._end_run(store, run_id, rows)
        self._print_summary(sent, lost, source, dropped, writer)
        if forwarder:
            print("forwarded " + ", ".join(f"{c} {v}" for _s, _f, c, v in forwarder.counters()), file=self.err)
        if stats_error:
            print(f"ktriage: the run's counters were not stored ({stats_error}): the lines above are their only "
                  "record", file=self.err)
        if writer.error is not None:
            raise StoreError(f"storing stopped: {writer.error}; {writer.failed} events after it were not stored")
        return 0

    @staticmethod
    def _end_run(store: Store, run_id: int, rows: list[tuple[str, str, str, int]]) -> str | None:
        """Store the run's end and counters; the reason when that is not possible (a full disk)."""
        try:
            store.end_run(run_id, rows)
        except DB_ERRORS as exc:
            return describe(exc)
        return None

    def _print_summary(self, sent: dict[str, int], lost: dict[str, int], source: LiveSource, dropped: int,
                       writer: StoreWriter) -> None:
        decoder = source.decoder
        assert decoder is not None
        p = lambda *a: print(*a, file=self.err)  # noqa: E731
        p(f"{'family':<10} {'events':>10} {'records':>10} {'bpf sent':>10} {'bpf lost':>10}")
        for fam in KERNEL_FAMILIES:
            p(f"{fam:<10} {source.counts[fam]:>10} {decoder.records[fam]:>10} {sent[fam]:>10} {lost[fam]:>10}")
        p(f"detections {source.counts['detection']}")
        p(f"decode errors {decoder.errors}, queue dropped {dropped}, stored {writer.written}, "
          f"store failed {writer.failed}, lost in kernel {sum(lost.values())}")
