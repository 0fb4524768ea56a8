"""The Linux live source shared by `record`, `watch`, `serve` and `selftest`: the kernel
sensor, calibrated, its records decoded into events in the order the kernel numbered them,
ktriage's own filtered out (and counted); and the checks of the sensor's own state that run
in the pipeline's detection stage after each batch."""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import time
from collections import Counter
from typing import NamedTuple

from ktriage.detect.engine import Engine
from ktriage.detect.integrity import IntegrityMonitor
from ktriage.detect.rules import builtin_rules
from ktriage.detect.tamper import TamperMonitor
from ktriage.errors import SetupError, UsageError
from ktriage.model.event import Event, live_order
from ktriage.model.families import KERNEL_FAMILIES
from ktriage.pipeline.bus import Bus, Row
from ktriage.pipeline.detect import Detector
from ktriage.pipeline.pipeline import Pipeline
from ktriage.sensor.guard import StateGuard
from ktriage.sensor.sensor import Sensor, SensorOptions, calibrate_created_bit
from ktriage.sensor.sigmarks import MarkReader, open_reader
from ktriage.sources.linux.decode import Decoder, boot_to_epoch_offset
from ktriage.sources.linux.procs import ProcessTable, descendants


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
    """Events from the kernel, in the order it numbered them."""

    def __init__(self, options: SensorOptions, host: str | None = None) -> None:
        self.sensor = Sensor(options)
        self.host = host or socket.gethostname()
        self.source = f"ebpf:{secrets.token_hex(4)}"  # one recording: seq is unique within it
        self.counts: Counter[str] = Counter()  # events delivered, per family
        self.own_events = 0  # ktriage's own calibration opens, not delivered
        self.stalled = False  # the last poll came long after the one before: the sensor was stopped
        self.decoder: Decoder | None = None
        self.marks: MarkReader | None = None
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
        self._last_poll = time.monotonic_ns()

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
        self.stalled = now - self._last_poll > STALL_NS + timeout_ms * 1_000_000
        self._last_poll = now
        for ev in events:
            self.counts[ev["family"]] += 1
        return events

    def stop(self) -> None:
        """Detached from the kernel: the next poll(0) reads every record it sent (sent - received = lost)."""
        self.sensor.detach()

    def rows(self) -> list[Row]:
        """The kernel's counters and the decoder's."""
        assert self.decoder is not None
        sent, lost = self.sensor.counters()
        rows = [("bpf", f, "sent", sent[f]) for f in KERNEL_FAMILIES]
        rows += [("bpf", f, "lost", lost[f]) for f in KERNEL_FAMILIES]
        rows += [("decode", f, "received", self.decoder.records[f]) for f in KERNEL_FAMILIES]
        rows += [("decode", f, "events", self.counts[f]) for f in KERNEL_FAMILIES]
        return rows + [("decode", "", "errors", self.decoder.errors), ("decode", "", "own", self.own_events)]

    def close(self) -> None:
        if self.marks is not None:
            self.marks.close()
        self.sensor.close()


class SensorChecks:
    """The sensor's own state after each batch: tamper (state drift, stops, kills) and losses."""

    def __init__(self, source: LiveSource, detector: Detector) -> None:
        self.source, self.detector = source, detector
        self.integrity = IntegrityMonitor(source.host, source.source)
        self.tamper: TamperMonitor | None = None

    def start(self) -> None:
        """Once the source has started (its sensor sealed, its marks open)."""
        assert self.source.marks is not None
        self.tamper = TamperMonitor(self.source.host, self.source.source, StateGuard(self.source.sensor),
                                    self.source.marks, os.getpid(), self.detector.next_seq)

    def check(self, final: bool) -> list[Event]:
        assert self.tamper is not None
        force = final or self.source.stalled
        if not (force or self.integrity.due()):
            return []
        _, lost = self.source.sensor.counters()
        out = self.tamper.check()
        det = self.integrity.check(sum(lost.values()), self.detector.engine.seq + 1, force)
        if det is not None:
            self.detector.engine.seq += 1
            out.append(det)
        return out


class Live(NamedTuple):
    pipeline: Pipeline
    source: LiveSource
    checks: SensorChecks


def live_pipeline(options: SensorOptions, host: str | None = None, bus: Bus | None = None) -> Live:
    """The kernel sensor through the Linux rules, then the sensor's own checks."""
    source = LiveSource(options, host)
    detector = Detector(Engine(builtin_rules("linux")))
    checks = SensorChecks(source, detector)
    detector.checks.append(checks)
    return Live(Pipeline(source, detector, bus), source, checks)
