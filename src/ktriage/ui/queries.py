"""The UI's reads: detections, an event and its chain, a process view and search
(the SQL box is ui/sqlbox.py). Values are always parameters; table and
column names come only from the event model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ktriage.model.event import Event
from ktriage.model.event import event_id as eid
from ktriage.model.families import FAMILIES
from ktriage.render.preview import Preview
from ktriage.store.access import ReadOnly

_TITLE = Preview(colour=False).title


def summary(ev: Event) -> str:
    """One line for lists: the preview's title and, for a process, its command line."""
    detail = ev.get("cmdline") or (ev.get("path") if ev["family"] == "process" else None)
    return f"{_TITLE(ev)}  {detail}" if detail else _TITLE(ev)
TIMELINE_LIMIT = 300


@contextmanager
def connection(db: ReadOnly) -> Iterator[ReadOnly]:
    try:
        yield db
    finally:
        db.close()


def _rows(db: ReadOnly, family: str, sql: str, params: tuple = ()) -> list[Event]:
    cur = db.execute(sql, params)
    names = [d[0] for d in cur.description]
    out = []
    for row in cur:
        ev = dict(zip(names, row))
        ev.pop("id", None)
        ev["family"] = family
        ev["id"] = eid(ev)
        out.append(ev)
    return out


def event_by_id(db: ReadOnly, ident: str) -> Event | None:
    family, _, rest = ident.partition("/")
    source, _, seq = rest.rpartition("#")
    if family not in FAMILIES or not source or not seq.isdigit():
        return None
    found = _rows(db, family, f"SELECT * FROM {family} WHERE source = ? AND seq = ?", (source, int(seq)))
    return found[0] if found else None


def detections(db: ReadOnly, min_severity: int, name: str | None, host: str | None, pid: int | None,
               since: int | None, until: int | None, limit: int) -> list[Event]:
    where, params = ["severity >= ?"], [min_severity]
    for clause, value in (("name = ?", name), ("host = ?", host), ("ts >= ?", since), ("ts <= ?", until)):
        if value is not None:
            where.append(clause)
            params.append(value)
    if pid is not None:
        where.append("(actor_pid = ? OR target_pid = ?)")
        params += [pid, pid]
    sql = f"SELECT * FROM detection WHERE {' AND '.join(where)} ORDER BY ts DESC, seq DESC LIMIT ?"
    return _rows(db, "detection", sql, (*params, limit))


def _host_clause(host: str | None) -> tuple[str, tuple]:
    return (" AND host = ?", (host,)) if host else ("", ())


def _latest_exec(db: ReadOnly, host: str | None, pid: int) -> Event | None:
    h, hp = _host_clause(host)
    rows = _rows(db, "process", f"SELECT * FROM process WHERE pid = ?{h} ORDER BY ts DESC LIMIT 20", (pid, *hp))
    return next((r for r in rows if r.get("action") == "exec"), rows[0] if rows else None)


def _ancestors(db: ReadOnly, host: str | None, start: Event | None) -> list[dict[str, Any]]:
    chain, seen, current = [], set(), start
    while current and current.get("ppid") and current["ppid"] not in seen and len(chain) < 12:
        ppid = current["ppid"]
        seen.add(ppid)
        parent = _latest_exec(db, host, ppid)
        chain.append({"pid": ppid, "image": (parent or {}).get("image") or current.get("parent_image"),
                      "cmdline": (parent or {}).get("cmdline")})
        current = parent
    return chain


def _children(db: ReadOnly, host: str | None, pid: int) -> list[dict[str, Any]]:
    h, hp = _host_clause(host)
    forks = db.execute(f"SELECT DISTINCT child_pid FROM process WHERE pid = ? AND action = 'fork'{h}", (pid, *hp))
    spawned = db.execute(f"SELECT DISTINCT pid FROM process WHERE ppid = ? AND action = 'exec' AND pid != ?{h}",
                         (pid, pid, *hp))
    pids = sorted({r[0] for r in forks} | {r[0] for r in spawned})
    out = []
    for child in pids[:200]:
        ex = _latest_exec(db, host, child)
        out.append({"pid": child, "image": (ex or {}).get("image"), "cmdline": (ex or {}).get("cmdline")})
    return out


def _edges(db: ReadOnly, host: str | None, pid: int) -> dict[str, list[dict[str, Any]]]:
    h, hp = _host_clause(host)
    into = db.execute(f"SELECT target_pid, target_image, name, max(severity) FROM detection WHERE actor_pid = ? "
                      f"AND target_pid IS NOT NULL AND target_pid != ?{h} GROUP BY target_pid, target_image, name",
                      (pid, pid, *hp))
    by = db.execute(f"SELECT actor_pid, image, name, max(severity) FROM detection WHERE target_pid = ? "
                    f"AND actor_pid != ?{h} GROUP BY actor_pid, image, name", (pid, pid, *hp))
    return {"injected_into": [{"pid": r[0], "image": r[1], "detection": r[2], "severity": r[3]} for r in into],
            "injected_by": [{"pid": r[0], "image": r[1], "detection": r[2], "severity": r[3]} for r in by]}


def _timeline(db: ReadOnly, host: str | None, pid: int) -> list[dict[str, Any]]:
    h, hp = _host_clause(host)
    events = []
    tables = db.tables()
    for family in FAMILIES:
        if family in tables and family != "detection":
            events += _rows(db, family, f"SELECT * FROM {family} WHERE pid = ?{h} ORDER BY ts DESC LIMIT ?",
                            (pid, *hp, TIMELINE_LIMIT))
    events.sort(key=lambda e: e["ts"] or 0, reverse=True)
    return [{"id": e["id"], "family": e["family"], "ts": e["ts"], "summary": summary(e)} for e in events[:TIMELINE_LIMIT]]


def process_view(db: ReadOnly, host: str | None, pid: int) -> dict[str, Any]:
    h, hp = _host_clause(host)
    me = _latest_exec(db, host, pid)
    files = db.execute(f"SELECT op, path, path2, count(*) FROM file WHERE pid = ? AND op IN "
                       f"('create', 'open_write', 'truncate', 'rename', 'chmod'){h} GROUP BY op, path, path2 "
                       f"ORDER BY 4 DESC LIMIT 200", (pid, *hp))
    peers = db.execute(f"SELECT op, proto, raddr, rport, count(*) FROM network WHERE pid = ? AND raddr IS NOT NULL{h} "
                       f"GROUP BY op, proto, raddr, rport ORDER BY 5 DESC LIMIT 200", (pid, *hp))
    images = db.execute(f"SELECT DISTINCT path FROM image WHERE pid = ?{h} ORDER BY path LIMIT 500", (pid, *hp))
    return {
        "pid": pid, "host": host or (me or {}).get("host"), "process": me,
        "ancestors": _ancestors(db, host, me), "children": _children(db, host, pid), **_edges(db, host, pid),
        "timeline": _timeline(db, host, pid), "images": [r[0] for r in images],
        "files_written": [{"op": r[0], "path": r[1], "path2": r[2], "count": r[3]} for r in files],
        "network_peers": [{"op": r[0], "proto": r[1], "raddr": r[2], "rport": r[3], "count": r[4]} for r in peers],
    }


SEARCHED = (("process", ("cmdline", "path")), ("file", ("path", "path2")), ("image", ("path",)),
            ("network", ("raddr",)), ("registry", ("key", "value")))


def search(db: ReadOnly, text: str, limit: int = 200) -> list[dict[str, Any]]:
    tables, pattern, out = db.tables(), f"%{text}%", []
    for family, columns in SEARCHED:
        if family not in tables:
            continue
        where = " OR ".join(f"{c} LIKE ?" for c in columns)
        for ev in _rows(db, family, f"SELECT * FROM {family} WHERE {where} ORDER BY ts DESC LIMIT ?",
                        (*[pattern] * len(columns), limit)):
            out.append({"id": ev["id"], "family": family, "ts": ev["ts"], "host": ev.get("host"), "pid": ev.get("pid"),
                        "summary": summary(ev)})
    out.sort(key=lambda e: e["ts"] or 0, reverse=True)
    return out[:limit]


def meta(db: ReadOnly) -> dict[str, Any]:
    tables = db.tables()
    counts = {f: db.execute(f"SELECT count(*) FROM {f}").fetchone()[0] for f in FAMILIES if f in tables}
    hosts = [r[0] for r in db.execute("SELECT DISTINCT host FROM detection WHERE host IS NOT NULL LIMIT 100")]
    names = [r[0] for r in db.execute("SELECT DISTINCT name FROM detection ORDER BY name")]
    return {"counts": counts, "hosts": hosts, "detection_names": names}
