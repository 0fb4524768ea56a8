"""Who an actor's parent was, for the events Windows logs without it.

A Sysmon process access (10), thread (8) or registry write (12-14) names the
acting process but not its parent; its start (1) did. Over one file's events in
time order, each start is remembered until that process exits (a pid Windows
reuses gets the new start), and the parent is filled into the actor's other
events that lack one. The rules can then tell the system's services.exe (child
of wininit) from a services.exe a tool started (PPLdump).
"""

from __future__ import annotations

from typing import Any

from ktriage.model.event import Event


def fill_parents(events: list[Event]) -> int:
    """Set parent_image (and ppid) of events whose actor started earlier in the same list; returns how many."""
    started: dict[int, tuple[Any, Any]] = {}  # pid -> (ppid, parent_image) of its start
    filled = 0
    for ev in events:
        pid = ev.get("pid")
        if ev["family"] == "process":
            if ev.get("action") == "exec" and pid is not None:
                started[pid] = (ev.get("ppid"), ev.get("parent_image"))
            elif ev.get("action") == "exit":
                started.pop(pid, None)
            continue
        if pid in started and ev.get("parent_image") is None:
            ppid, parent = started[pid]
            ev["parent_image"] = parent
            if ev.get("ppid") is None:
                ev["ppid"] = ppid
            filled += 1
    return filled
