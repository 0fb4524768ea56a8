"""The live event source shared by `record` and `watch`: the kernel sensor,
calibrated, and its records decoded into events with ktriage's own filtered out
(and counted)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from ktriage.detect.engine import Engine
from ktriage.detect.integrity import IntegrityMonitor
from ktriage.detect.rules import builtin_rules
from ktriage.detect.tamper import TamperMonitor
from ktriage.errors import SetupError, UsageError
from ktriage.model.event import Event, live_order
from ktriage.sensor.decode import Decoder, boot_to_epoch_offset
from ktriage.sensor.guard import StateGuard
from ktriage.sensor.procs import ProcessTable, descendants
from ktriage.sensor.sensor import Sensor, SensorOptions, calibrate_created_bit
from ktriage.sensor.sigmarks import MarkReader, open_reader


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise SetupError(f"{what} needs root (BPF programs): run it as root (or with sudo)")


def check_pids(pids: list[int]) -> dict[int, int]:
    """The live targets: the pids and their descendants, with their generation."""
    for pid in pids:
        if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
            raise UsageError(f"--pid {pid}: no such process")
    return descendants(set(pids)) if pids else {}


POLL_MS = 100  # bulk records are not announced one by one (see emit in bpf/common.h): read this often
STALL_NS = 1_000_000_000  # a poll this long after the last one: the sensor was stopped (or starved), check now


class LiveSource:
    """Events from the kernel, then the detections they complete (detect=True)."""

    def __init__(self, options: SensorOptions, detect: bool = True, host: str | None = None) -> None:
        self.sensor = Sensor(options)
        self.host = host or socket.gethostname()
        self.source = f"ebpf:{secrets.token_hex(4)}"  # one recording: seq is unique within it
        self.engine = Engine(builtin_rules("linux")) if detect else None
        self.integrity = IntegrityMonitor(self.host, self.source) if detect else None
        self.counts: Counter[str] = Counter()  # events delivered, per family
        self.own_events = 0  # ktriage's own calibration opens, not delivered
        self.decoder: Decoder | None = None
        self.marks: MarkReader | None = None
        self.tamper: TamperMonitor | None = None
        self._early: list[bytes] = []
        self._last_poll = 0

    def start(self) -> None:
        self.sensor.start()
        procs = ProcessTable()
        procs.seed_from_proc()
        with tempfile.TemporaryDirectory(prefix="ktriage-") as tmp:
            created_bit, self._early = calibrate_created_bit(self.sensor, tmp)
        self.sensor.seal()
        self.decoder = Decoder(self.host, procs, boot_to_epoch_offset(), created_bit, self.sensor.options.families)
        self.decoder.source = self.source
        self.decoder.own_objects = self.sensor.own
        if self.sensor.options.peer_tgid:
            self.decoder.sensor_pids.add(self.sensor.options.peer_tgid)
        self.marks = open_reader()
        if self.engine is not None:
            self.tamper = TamperMonitor(self.host, self.source, StateGuard(self.sensor), self.marks, os.getpid(),
                                        self.next_detection_seq)
        self._last_poll = time.monotonic_ns()

    def next_detection_seq(self) -> int:
        """The next seq of the detection stream (shared by the rules and the state checks)."""
        assert self.engine is not None
        self.engine.seq += 1
        return self.engine.seq

    def poll(self, timeout_ms: int) -> list[Event]:
        """Events decoded from what the kernel sent within timeout_ms (0: what is there now)."""
        assert self.decoder is not None
        raws = self._early + self.sensor.poll(timeout_ms)
        self._early = []
        decoded = self.decoder.decode_many(raws)
        own = os.getpid()
        events = sorted((e for e in decoded if e["pid"] != own), key=live_order)
        self.own_events += len(decoded) - len(events)
        now = time.monotonic_ns()
        stalled = now - self._last_poll > STALL_NS + timeout_ms * 1_000_000
        self._last_poll = now
        if self.engine is not None:
            events += self.engine.process_many(events)
            events += self._integrity(force=timeout_ms == 0 or stalled)
        for ev in events:
            self.counts[ev["family"]] += 1
        return events

    def _integrity(self, force: bool) -> list[Event]:
        assert self.integrity is not None and self.engine is not None and self.tamper is not None
        if not (force or self.integrity.due()):
            return []
        _, lost = self.sensor.counters()
        out = self.tamper.check()
        det = self.integrity.check(sum(lost.values()), self.engine.seq + 1, force)
        if det is not None:
            self.engine.seq += 1
            out.append(det)
        return out

    def close(self) -> None:
        if self.marks is not None:
            self.marks.close()
        self.sensor.close()


class StopFlag:
    """Set by SIGINT or SIGTERM while installed with :func:`stop_on_signals`."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, _signum: int, _frame: object) -> None:
        self.requested = True


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    stop = StopFlag()
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
