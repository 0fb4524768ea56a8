"""At a recorder's start: earlier runs of this host that never ended (their recorder was killed
and nobody, not even its watchdog, was left to say so) become SENSOR_TAMPER_ATTEMPTs naming the
killer from the pinned signal marks, and are closed with that reason."""

from __future__ import annotations

import time
from collections.abc import Callable

from ktriage.detect.tamper import death_reason, detection, last_fatal, mark_evidence
from ktriage.model.event import Event
from ktriage.sensor.sigmarks import MarkReader, SignalMark
from ktriage.sources.linux.procs import is_same_process
from ktriage.store.access import Store


def boot_epoch_ns() -> int:
    """When this boot began, ns since the epoch."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def unclosed_runs(store: Store, host: str, marks: MarkReader | None, source: str,
                  next_seq: Callable[[], int]) -> list[Event]:
    out = []
    booted = boot_epoch_ns()
    for run_id, pid, pid_start, started in store.open_runs(host):
        if pid is None or pid_start is None or is_same_process(pid, pid_start):
            continue  # still recording (or a run from before ktriage kept its pid)
        mark = last_fatal(marks.marks(pid), started - booted) if marks and started > booted else None
        reason = _reason(f"earlier recording (run {run_id}, sensor pid {pid})", started, booted, marks, mark)
        if store.end_run_abnormally(run_id, reason):
            out.append(detection(host, f"detect/{source}", next_seq(), reason, mark, pid, 0,
                                 [["run", run_id]] + (mark_evidence(mark) if mark else [])))
    return out


def _reason(what: str, started: int, booted: int, marks: MarkReader | None, mark: SignalMark | None) -> str:
    if started < booted:
        return f"{what} has no end and the host rebooted since: power loss, a crash, or a kill whose trace went"
    if marks is None:
        return f"{what} has no end; the pinned signal marks are gone (unpinned?), so the cause is unknown"
    return death_reason(what, mark)
