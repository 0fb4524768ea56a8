"""Sensor integrity drift and its clearing (the seed's DRIVER_DISPATCH_OR_OBJECT_TAMPER
and _CLEARED): a state mask checked every few seconds, a detection when it changes.

Bit 0x1 EVENTS_LOST: the kernel could not hand events to ktriage since the last
check (its ring buffer was full) — what flooding to blind a sensor looks like.
"""

from __future__ import annotations

import json
import time
from typing import Any

EVENTS_LOST = 0x1


class IntegrityMonitor:
    def __init__(self, host: str, source: str, interval_s: float = 5.0) -> None:
        self.host = host
        self.source = f"detect/{source}"
        self.interval_ns = int(interval_s * 1e9)
        self.mask = 0
        self.last_check = time.monotonic_ns()
        self.last_lost = 0

    def due(self) -> bool:
        return time.monotonic_ns() - self.last_check >= self.interval_ns

    def check(self, lost_total: int, next_seq: int, force: bool = False) -> dict[str, Any] | None:
        """A detection when the state changed since the last check, else None."""
        now = time.monotonic_ns()
        if not force and now - self.last_check < self.interval_ns:
            return None
        self.last_check = now
        mask = EVENTS_LOST if lost_total > self.last_lost else 0
        new_losses = lost_total - self.last_lost
        self.last_lost = lost_total
        if mask == self.mask:
            return None
        self.mask = mask
        if mask:
            return self._detection("SENSOR_INTEGRITY_DRIFT", 5, f"sensor integrity drift: {new_losses} events "
                                   "lost in the kernel since the last check", mask, next_seq)
        return self._detection("SENSOR_INTEGRITY_CLEARED", 2, "sensor integrity returned to expected state "
                               "(no event lost since the last check)", mask, next_seq)

    def _detection(self, name: str, severity: int, reason: str, mask: int, seq: int) -> dict[str, Any]:
        return {
            "family": "detection", "ts": time.time_ns(), "host": self.host, "source": self.source, "seq": seq,
            "pid": None, "name": name, "severity": severity, "actor_pid": None, "target_pid": None,
            "flags": mask, "access_mask": 0, "age_ms": 0, "reason": reason, "technique": "T1562.001",
            "seed_name": "DRIVER_DISPATCH_OR_OBJECT_TAMPER" + ("" if mask else "_CLEARED"), "rule": "integrity",
            "event_ids": json.dumps([]), "evidence": json.dumps([["flags", mask]]), "trigger_id": None,
        }
