"""SENSOR_TAMPER_ATTEMPT from the sensor's own state, not from one event: its kernel state
differing from what user space set up, a stop seen when it ends, its watchdog gone, a previous
run killed. Written by the live source (here), the watchdog (ktriage/watchdog.py) and the next
start (ktriage/recovery.py), all through :func:`detection`.

Bpf() commands on ktriage's objects and signals to its processes also arrive as events, and the
SENSOR_TAMPER_ATTEMPT rule of detect/rules/linux.yml handles those; stops are left to this
module, which knows how long they lasted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from ktriage.model.event import Event
from ktriage.sensor.sigmarks import STOP_SIGNALS, MarkReader, SignalMark, boot_now

NAME = "SENSOR_TAMPER_ATTEMPT"
SEVERITY = 7


class Checks(Protocol):
    def problems(self) -> list[str]: ...


class Child(Protocol):
    pid: int

    def poll(self) -> int | None: ...


def detection(host: str, source: str, seq: int, reason: str, mark: SignalMark | None = None,
              target_pid: int | None = None, age_ms: int = 0, evidence: list[Any] | None = None) -> Event:
    """A SENSOR_TAMPER_ATTEMPT; the actor is the mark's sender when a signal mark names one."""
    actor = mark.sender if mark else None
    return {
        "family": "detection", "ts": time.time_ns(), "host": host, "source": source, "seq": seq,
        "pid": actor, "tid": mark.sender_tid if mark else None, "comm": mark.comm if mark else None,
        "image": mark.exe or None if mark else None, "name": NAME, "severity": SEVERITY, "actor_pid": actor,
        "target_pid": target_pid, "flags": 1 if mark else 0, "access_mask": 0, "age_ms": age_ms,
        "reason": reason, "technique": "T1562.001", "seed_name": "DRIVER_DISPATCH_OR_OBJECT_TAMPER",
        "rule": "tamper", "event_ids": json.dumps([]), "evidence": json.dumps(evidence or []),
        "trigger_id": None,
    }


def mark_evidence(mark: SignalMark) -> list[Any]:
    return [["signal", mark.name], ["sender", mark.sender], ["code", mark.code], ["boot_ns", mark.ts_boot]]


def last_fatal(marks: list[SignalMark], since_boot_ns: int) -> SignalMark | None:
    """The last signal after since that may have ended a process (not a stop, not SIGCONT); SIGKILL first."""
    fatal = [m for m in marks if m.ts_boot >= since_boot_ns and m.sig not in STOP_SIGNALS and m.name != "SIGCONT"]
    kills = [m for m in fatal if m.name == "SIGKILL"]
    return (kills or fatal or [None])[-1]


def death_reason(what: str, mark: SignalMark | None) -> str:
    if mark is None:
        return f"{what} ended without a stop, cause unknown (no signal to it was seen)"
    origin = "the kernel" if mark.from_kernel else mark.who()
    return f"{what} killed by {mark.name} from {origin}"


class TamperMonitor:
    """Runs with the live source's integrity checks; each finding is reported once."""

    def __init__(self, host: str, source: str, guard: Checks, marks: MarkReader | None, sensor_pid: int,
                 next_seq: Callable[[], int]) -> None:
        self.host, self.source = host, f"detect/{source}"
        self.guard, self.marks, self.sensor_pid = guard, marks, sensor_pid
        self.next_seq = next_seq
        self.reported: set[str] = set()
        self.started_boot = boot_now()
        self.last_stop = self.started_boot
        self.watchdog: Child | None = None
        self.watchdog_reported = False

    def check(self) -> list[Event]:
        return self._state() + self._stops() + self._watchdog()

    def _state(self) -> list[Event]:
        found = self.guard.problems()
        new = [p for p in found if p not in self.reported]
        self.reported = set(found)
        return [self._det(f"sensor state changed behind its back: {p}", evidence=[["state", p]]) for p in new]

    def _stops(self) -> list[Event]:
        if self.marks is None:
            return []
        marks = self.marks.marks(self.sensor_pid)
        cont = max((m.ts_boot for m in marks if m.name == "SIGCONT"), default=0)
        out = []
        for stop in (m for m in marks if m.sig in STOP_SIGNALS and m.ts_boot > self.last_stop):
            self.last_stop = stop.ts_boot
            resumed = cont if cont > stop.ts_boot else boot_now()
            lasted = (resumed - stop.ts_boot) // 1_000_000
            reason = f"sensor stopped {lasted / 1000:.1f} s by {stop.name} from {stop.who()}: blind meanwhile"
            out.append(self._det(reason, stop, lasted, mark_evidence(stop)))
        return out

    def _watchdog(self) -> list[Event]:
        if self.watchdog is None or self.watchdog_reported or self.watchdog.poll() is None:
            return []
        self.watchdog_reported = True
        marks = self.marks.marks(self.watchdog.pid) if self.marks else []
        mark = last_fatal(marks, self.started_boot)
        reason = death_reason(f"the sensor's watchdog (pid {self.watchdog.pid})", mark)
        return [self._det(reason, mark, 0, mark_evidence(mark) if mark else [], target=self.watchdog.pid)]

    def _det(self, reason: str, mark: SignalMark | None = None, age_ms: int = 0, evidence: list[Any] | None = None,
             target: int | None = None) -> Event:
        return detection(self.host, self.source, self.next_seq(), reason, mark, target or self.sensor_pid, age_ms,
                         evidence)
