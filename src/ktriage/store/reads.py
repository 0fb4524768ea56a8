"""The store's named reads, for the CLI, the UI and replay: each one statement on a ReadOnly.

Values are always parameters (the connection's own marker, ``db.param``); table and column names
come only from the event model. Events come back as the model has them: ``family`` set, the
row id dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ktriage.model.event import Event
from ktriage.model.families import FAMILIES
from ktriage.store.readonly import ReadOnly

WRITE_OPS = ("create", "open_write", "truncate", "rename", "chmod")


def _events(db: ReadOnly, family: str, sql: str, params: tuple = ()) -> list[Event]:
    out = []
    for ev in db.dicts(sql, params):
        ev.pop("id", None)
        ev["family"] = family
        out.append(ev)
    return out


def stored_rows(db: ReadOnly, family: str) -> Iterator[tuple[int, Event]]:
    """Every row of a family's table with its row id, as an event (not yet checked against the model)."""
    for ev in db.dicts(f"SELECT * FROM {family}"):
        row_id = ev.pop("id")
        ev["family"] = family
        yield row_id, ev


def event_at(db: ReadOnly, family: str, source: str, seq: int) -> Event | None:
    p = db.param
    found = _events(db, family, f"SELECT * FROM {family} WHERE source = {p} AND seq = {p}", (source, seq))
    return found[0] if found else None


@dataclass(frozen=True)
class DetectionFilter:
    min_severity: int = 0
    name: str | None = None
    host: str | None = None
    pid: int | None = None  # as actor or target
    since: int | None = None  # ts, ns
    until: int | None = None


def detections(db: ReadOnly, which: DetectionFilter, newest_first: bool = False,
               limit: int | None = None) -> list[Event]:
    p = db.param
    where, params = [f"severity >= {p}"], [which.min_severity]
    for clause, value in ((f"name = {p}", which.name), (f"host = {p}", which.host),
                          (f"ts >= {p}", which.since), (f"ts <= {p}", which.until)):
        if value is not None:
            where.append(clause)
            params.append(value)
    if which.pid is not None:
        where.append(f"(actor_pid = {p} OR target_pid = {p})")
        params += [which.pid, which.pid]
    order = "ts DESC, seq DESC" if newest_first else "ts, seq"
    sql = f"SELECT * FROM detection WHERE {' AND '.join(where)} ORDER BY {order}"
    if limit is not None:
        sql += f" LIMIT {p}"
        params.append(limit)
    return _events(db, "detection", sql, tuple(params))


# One process (on one host, or any) ---------------------------------------------------------------------------------

def _host(db: ReadOnly, host: str | None) -> tuple[str, tuple]:
    return (f" AND host = {db.param}", (host,)) if host else ("", ())


def process_events(db: ReadOnly, host: str | None, pid: int, limit: int = 20) -> list[Event]:
    """The newest process events of pid (exec, fork, exit …), newest first."""
    h, hp = _host(db, host)
    p = db.param
    return _events(db, "process", f"SELECT * FROM process WHERE pid = {p}{h} ORDER BY ts DESC LIMIT {p}",
                   (pid, *hp, limit))


def child_pids(db: ReadOnly, host: str | None, pid: int) -> list[int]:
    """The pids pid forked, and those that exec'd with pid as their parent, in order."""
    h, hp = _host(db, host)
    p = db.param
    forked = db.all(f"SELECT DISTINCT child_pid FROM process WHERE pid = {p} AND action = 'fork'{h}", (pid, *hp))
    spawned = db.all(f"SELECT DISTINCT pid FROM process WHERE ppid = {p} AND action = 'exec' AND pid != {p}{h}",
                     (pid, pid, *hp))
    return sorted({r[0] for r in forked if r[0] is not None} | {r[0] for r in spawned})


def detection_edges(db: ReadOnly, host: str | None, pid: int) -> dict[str, list[dict[str, Any]]]:
    """The other processes pid's detections name: those it acted on, and those that acted on it."""
    h, hp = _host(db, host)
    p = db.param
    into = db.all(f"SELECT target_pid, target_image, name, max(severity) FROM detection WHERE actor_pid = {p} "
                  f"AND target_pid IS NOT NULL AND target_pid != {p}{h} GROUP BY target_pid, target_image, name",
                  (pid, pid, *hp))
    by = db.all(f"SELECT actor_pid, image, name, max(severity) FROM detection WHERE target_pid = {p} "
                f"AND actor_pid != {p}{h} GROUP BY actor_pid, image, name", (pid, pid, *hp))
    return {"injected_into": [{"pid": r[0], "image": r[1], "detection": r[2], "severity": r[3]} for r in into],
            "injected_by": [{"pid": r[0], "image": r[1], "detection": r[2], "severity": r[3]} for r in by]}


def recent_events(db: ReadOnly, host: str | None, pid: int, limit: int) -> list[Event]:
    """Up to limit of pid's newest events of each family but detection (the caller merges them by time)."""
    h, hp = _host(db, host)
    p = db.param
    tables, out = db.tables(), []
    for family in FAMILIES:
        if family in tables and family != "detection":
            out += _events(db, family, f"SELECT * FROM {family} WHERE pid = {p}{h} ORDER BY ts DESC LIMIT {p}",
                           (pid, *hp, limit))
    return out


def files_written(db: ReadOnly, host: str | None, pid: int, limit: int = 200) -> list[dict[str, Any]]:
    h, hp = _host(db, host)
    p = db.param
    marks = ", ".join([p] * len(WRITE_OPS))
    rows = db.all(f"SELECT op, path, path2, count(*) FROM file WHERE pid = {p} AND op IN ({marks}){h} "
                  f"GROUP BY op, path, path2 ORDER BY 4 DESC LIMIT {p}", (pid, *WRITE_OPS, *hp, limit))
    return [{"op": r[0], "path": r[1], "path2": r[2], "count": r[3]} for r in rows]


def network_peers(db: ReadOnly, host: str | None, pid: int, limit: int = 200) -> list[dict[str, Any]]:
    h, hp = _host(db, host)
    p = db.param
    rows = db.all(f"SELECT op, proto, raddr, rport, count(*) FROM network WHERE pid = {p} AND raddr IS NOT NULL{h} "
                  f"GROUP BY op, proto, raddr, rport ORDER BY 5 DESC LIMIT {p}", (pid, *hp, limit))
    return [{"op": r[0], "proto": r[1], "raddr": r[2], "rport": r[3], "count": r[4]} for r in rows]


def images_loaded(db: ReadOnly, host: str | None, pid: int, limit: int = 500) -> list[str]:
    h, hp = _host(db, host)
    p = db.param
    return [r[0] for r in db.all(f"SELECT DISTINCT path FROM image WHERE pid = {p}{h} ORDER BY path LIMIT {p}",
                                 (pid, *hp, limit))]


# The whole database ------------------------------------------------------------------------------------------------

def containing(db: ReadOnly, family: str, columns: tuple[str, ...], text: str, limit: int) -> list[Event]:
    """A family's newest events with text in any of columns (LIKE's % and _ in text match themselves)."""
    p = db.param
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    where = " OR ".join(f"{c} LIKE {p} ESCAPE '\\'" for c in columns)
    return _events(db, family, f"SELECT * FROM {family} WHERE {where} ORDER BY ts DESC LIMIT {p}",
                   (*[pattern] * len(columns), limit))


def row_counts(db: ReadOnly) -> dict[str, int]:
    tables = db.tables()
    return {f: db.all(f"SELECT count(*) FROM {f}")[0][0] for f in FAMILIES if f in tables}


def detection_hosts(db: ReadOnly, limit: int = 100) -> list[str]:
    return [r[0] for r in db.all(f"SELECT DISTINCT host FROM detection WHERE host IS NOT NULL LIMIT {db.param}",
                                 (limit,))]


def detection_names(db: ReadOnly) -> list[str]:
    return [r[0] for r in db.all("SELECT DISTINCT name FROM detection ORDER BY name")]
