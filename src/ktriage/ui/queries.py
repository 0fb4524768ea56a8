"""The UI's views of a database, made of the store's named reads (store/reads.py): detections,
an event and its chain, a process view and search; each event with its model id. The SQL box is
ui/sqlbox.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ktriage.model.event import Event
from ktriage.model.event import event_id as eid
from ktriage.model.families import FAMILIES
from ktriage.render.preview import Preview
from ktriage.store import reads
from ktriage.store.readonly import ReadOnly

_TITLE = Preview(colour=False).title


def summary(ev: Event) -> str:
    """One line for lists: the preview's title and, for a process, its command line."""
    detail = ev.get("cmdline") or (ev.get("path") if ev["family"] == "process" else None)
    return f"{_TITLE(ev)}  {detail}" if detail else _TITLE(ev)


TIMELINE_LIMIT = 300
CHILDREN_LIMIT = 200


@contextmanager
def connection(db: ReadOnly) -> Iterator[ReadOnly]:
    try:
        yield db
    finally:
        db.close()


def _with_id(events: list[Event]) -> list[Event]:
    for ev in events:
        ev["id"] = eid(ev)
    return events


def event_by_id(db: ReadOnly, ident: str) -> Event | None:
    family, _, rest = ident.partition("/")
    source, _, seq = rest.rpartition("#")
    if family not in FAMILIES or not source or not seq.isdigit():
        return None
    found = reads.event_at(db, family, source, int(seq))
    return _with_id([found])[0] if found else None


def detections(db: ReadOnly, which: reads.DetectionFilter, limit: int) -> list[Event]:
    return _with_id(reads.detections(db, which, newest_first=True, limit=limit))


def _latest_exec(db: ReadOnly, host: str | None, pid: int) -> Event | None:
    rows = reads.process_events(db, host, pid)
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
    out = []
    for child in reads.child_pids(db, host, pid)[:CHILDREN_LIMIT]:
        ex = _latest_exec(db, host, child)
        out.append({"pid": child, "image": (ex or {}).get("image"), "cmdline": (ex or {}).get("cmdline")})
    return out


def _timeline(db: ReadOnly, host: str | None, pid: int) -> list[dict[str, Any]]:
    events = _with_id(reads.recent_events(db, host, pid, TIMELINE_LIMIT))
    events.sort(key=lambda e: e["ts"] or 0, reverse=True)
    return [{"id": e["id"], "family": e["family"], "ts": e["ts"], "summary": summary(e)} for e in events[:TIMELINE_LIMIT]]


def process_view(db: ReadOnly, host: str | None, pid: int) -> dict[str, Any]:
    me = _latest_exec(db, host, pid)
    if me is not None:
        me["id"] = eid(me)
    return {
        "pid": pid, "host": host or (me or {}).get("host"), "process": me,
        "ancestors": _ancestors(db, host, me), "children": _children(db, host, pid),
        **reads.detection_edges(db, host, pid), "timeline": _timeline(db, host, pid),
        "images": reads.images_loaded(db, host, pid), "files_written": reads.files_written(db, host, pid),
        "network_peers": reads.network_peers(db, host, pid),
    }


SEARCHED = (("process", ("cmdline", "path")), ("file", ("path", "path2")), ("image", ("path",)),
            ("network", ("raddr",)), ("registry", ("key", "value")))


def search(db: ReadOnly, text: str, limit: int = 200) -> list[dict[str, Any]]:
    tables, out = db.tables(), []
    for family, columns in SEARCHED:
        if family not in tables:
            continue
        for ev in _with_id(reads.containing(db, family, columns, text, limit)):
            out.append({"id": ev["id"], "family": family, "ts": ev["ts"], "host": ev.get("host"), "pid": ev.get("pid"),
                        "summary": summary(ev)})
    out.sort(key=lambda e: e["ts"] or 0, reverse=True)
    return out[:limit]


def meta(db: ReadOnly) -> dict[str, Any]:
    return {"counts": reads.row_counts(db), "hosts": reads.detection_hosts(db),
            "detection_names": reads.detection_names(db)}
