"""`ktriage record`: the live sensor into the store, with a live summary.

sensor (ring buffer) -> decoder (+ process table) -> bus -> store writer.
Ends on its duration, Ctrl-C or SIGTERM, then drains what the kernel already
sent, stores it, and prints per-family counts and every drop.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from ktriage import __version__
from ktriage.bus import Bus
from ktriage.errors import SetupError, UsageError
from ktriage.sensor import layouts
from ktriage.sensor.decode import Decoder, boot_to_epoch_offset
from ktriage.sensor.procs import ProcessTable, descendants
from ktriage.sensor.sensor import ALL_FAMILIES, Sensor, SensorOptions, calibrate_created_bit
from ktriage.store.sqlite import SqliteStore
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


def check_pids(pids: list[int]) -> dict[int, int]:
    """The live targets: the pids and their descendants, with their generation."""
    for pid in pids:
        if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
            raise UsageError(f"--pid {pid}: no such process")
    return descendants(set(pids)) if pids else {}


class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, _frame: object) -> None:
        self.requested = True


class Recorder:
    def __init__(self, options: RecordOptions, err: TextIO = sys.stderr) -> None:
        self.options = options
        self.err = err
        self.host = socket.gethostname()
        self.counts: Counter[str] = Counter()  # events published, per family
        self.own_events = 0  # ktriage's own calibration opens, not stored
        self.tty = err.isatty()

    def run(self) -> int:
        if os.geteuid() != 0:
            raise SetupError("recording needs root (BPF programs): run it with sudo")
        o = self.options
        pids = check_pids(o.pids)
        store = SqliteStore(o.db)
        sensor = Sensor(SensorOptions(ring_bytes=o.ring_bytes, pids=pids, families=o.families,
                                      max_depth=o.max_depth))
        try:
            sensor.start()
            return self._record(store, sensor)
        finally:
            sensor.close()
            store.close()

    def _record(self, store: SqliteStore, sensor: Sensor) -> int:
        procs = ProcessTable()
        procs.seed_from_proc()
        with tempfile.TemporaryDirectory(prefix="ktriage-") as tmp:
            created_bit, early = calibrate_created_bit(sensor, tmp)
        decoder = Decoder(self.host, procs, boot_to_epoch_offset(), created_bit, self.options.families)
        bus = Bus()
        writer = StoreWriter(store, bus.subscribe("store", STORE_QUEUE_EVENTS))
        assert sensor.probe is not None
        run_id = store.begin_run(self.host, "ebpf", platform.release(), __version__, " ".join(sys.argv),
                                 sensor.probe.works)
        writer.start()
        stop = _Stop()
        old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._publish(decoder, bus, early)
            self._loop(sensor, decoder, bus, writer, stop)
            self._publish(decoder, bus, sensor.poll(0))  # what the kernel already sent
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            bus.close()
            writer.join()
        return self._finish(store, sensor, decoder, bus, writer, run_id)

    def _loop(self, sensor: Sensor, decoder: Decoder, bus: Bus, writer: StoreWriter, stop: _Stop) -> None:
        who = f"pids {sorted(sensor.options.pids)} and their children" if sensor.options.pids else "this host"
        assert sensor.probe is not None
        print(f"ktriage: kernel {platform.release()}: {sensor.probe.summary()}", file=self.err)
        print(f"ktriage: recording {who} into {self.options.db} (Ctrl-C to stop)", file=self.err, flush=True)
        start = last = time.monotonic()
        deadline = start + self.options.duration if self.options.duration else None
        while not stop.requested and writer.error is None and writer.is_alive():
            self._publish(decoder, bus, sensor.poll(100))
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if now - last >= (1.0 if self.tty else self.options.summary_interval):
                self._live_line(now - start, sensor)
                last = now
        if self.tty:
            print(file=self.err)

    def _publish(self, decoder: Decoder, bus: Bus, raws: list[bytes]) -> None:
        if not raws:
            return
        decoded = decoder.decode_many(raws)
        events = [e for e in decoded if e["pid"] != os.getpid()]
        self.own_events += len(decoded) - len(events)
        for ev in events:
            self.counts[ev["family"]] += 1
        bus.publish(events)

    def _live_line(self, elapsed: float, sensor: Sensor) -> None:
        _, lost = sensor.counters()
        total = sum(self.counts.values())
        fams = " ".join(f"{f}={self.counts[f]}" for f in layouts.FAMILIES)
        line = f"{elapsed:6.0f}s  events={total} ({total / max(elapsed, 1e-9):.0f}/s)  {fams}  lost={sum(lost.values())}"
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=self.err, flush=True)

    def _finish(self, store: SqliteStore, sensor: Sensor, decoder: Decoder, bus: Bus, writer: StoreWriter,
                run_id: int) -> int:
        sent, lost = sensor.counters()
        sub = bus.subscriptions[0]
        rows = [("bpf", f, "sent", sent[f]) for f in layouts.FAMILIES]
        rows += [("bpf", f, "lost", lost[f]) for f in layouts.FAMILIES]
        rows += [("decode", f, "received", decoder.records[f]) for f in layouts.FAMILIES]
        rows += [("decode", f, "events", self.counts[f]) for f in layouts.FAMILIES]
        rows += [("decode", "", "errors", decoder.errors), ("decode", "", "own", self.own_events),
                 ("queue", "", "dropped", sub.dropped),
                 ("store", "", "written", writer.written), ("store", "", "failed", writer.failed)]
        if writer.error is None:
            store.end_run(run_id, rows)
        self._print_summary(sent, lost, decoder, sub.dropped, writer)
        if writer.error is not None:
            raise SetupError(f"storing stopped: {writer.error}")
        return 0

    def _print_summary(self, sent: dict[str, int], lost: dict[str, int], decoder: Decoder, dropped: int,
                       writer: StoreWriter) -> None:
        p = lambda *a: print(*a, file=self.err)  # noqa: E731
        p(f"{'family':<10} {'events':>10} {'records':>10} {'bpf sent':>10} {'bpf lost':>10}")
        for fam in layouts.FAMILIES:
            p(f"{fam:<10} {self.counts[fam]:>10} {decoder.records[fam]:>10} {sent[fam]:>10} {lost[fam]:>10}")
        p(f"decode errors {decoder.errors}, queue dropped {dropped}, stored {writer.written}, "
          f"store failed {writer.failed}, lost in kernel {sum(lost.values())}")
