"""Windows event logs → normalized events.

Readers yield (record number, System, EventData) from EVTX (the Rust-backed
``evtx`` package), from JSON lines in the OTRF/Mordor (flat), Winlogbeat
(``winlog``) or evtx-rs (``Event``) shapes, and from those inside .zip or
.tar.gz archives. :func:`normalize` maps one record with windows_map.MAPPINGS.
Unreadable chunks and records are reported as :class:`RecordError` values in
the stream (file and position), never raised, so the rest is ingested.
"""

from __future__ import annotations

import json
import ntpath
import re
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import evtx
import orjson

from ktriage.sources.windows_map import BOOLEAN_FIELDS, INTEGER_FIELDS, LOGS, MAPPINGS, rights_names

Event = dict[str, Any]
Record = tuple[int, dict[str, Any], dict[str, Any]]  # record number, System, EventData


@dataclass(frozen=True)
class RecordError:
    where: str  # file and position
    message: str


def _ts(text: str | None) -> int:
    """ns since the epoch from a Windows SystemTime / @timestamp string."""
    if not text:
        return 0
    text = text.strip().replace(" UTC", "").replace("Z", "")
    whole, _, frac = text.partition(".")
    base = datetime.fromisoformat(whole.replace(" ", "T")).replace(tzinfo=timezone.utc)
    return int(base.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)


def _int(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 0)
    except ValueError:
        return None


def _loads(text: str | bytes) -> Any:
    """JSON at orjson's speed; what it refuses (integers beyond 64 bits, lone surrogates) goes to json."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def mapped(channel: str, event_id: int | None) -> bool:
    """Whether records of this log and EventID become events (windows_map.MAPPINGS)."""
    log = LOGS.get(channel.lower())
    return log is not None and (log, event_id) in MAPPINGS


def _clean(value: Any) -> Any:
    return None if value in ("", "-", None) else value


def _frames(trace: str) -> list[list[Any]]:
    frames: list[list[Any]] = []
    for part in trace.split("|"):
        if part.upper().startswith("UNKNOWN("):
            frames.append([_int("0x" + part[8:].rstrip(")")), "[unknown]"])
        else:
            module, _, offset = part.rpartition("+")
            frames.append([None, f"{ntpath.basename(module)}+0x{offset.lower()}" if module else part])
    return frames


def _origin(trace: str | None, image: str | None) -> dict[str, Any]:
    """The seed's origin questions asked of a Sysmon CallTrace: where the first frame is, and UNKNOWN frames."""
    if not trace:
        return {}
    frames = _frames(trace)
    first = frames[0][1].split("+")[0].lower()
    cls = {"ntdll.dll": "ntdll", "win32u.dll": "win32u", "[unknown]": "anon"}.get(first)
    if cls is None:
        cls = "exe" if image and first == ntpath.basename(image).lower() else "file"
    unknown = sum(1 for _, sym in frames if sym == "[unknown]")
    return {"stack": json.dumps(frames), "origin_module": frames[0][1], "origin_class": cls,
            "stack_anomaly": f"{unknown} UNKNOWN frame(s): code in memory no module backs" if unknown else None}


def normalize(system: dict[str, Any], data: dict[str, Any], source: str, seq: int) -> Event | None:
    """One Windows record as an event, or None when no mapping covers it."""
    log = LOGS.get(str(system.get("Channel", "")).lower())
    mapping = MAPPINGS.get((log, _int(system.get("EventID")) or -1)) if log else None
    if mapping is None:
        return None
    family, constants, fields = mapping
    lower = {k.lower(): v for k, v in data.items()}
    ev: Event = {"family": family, "ts": _ts(system.get("SystemTime")), "host": system.get("Computer"),
                 "source": source, "seq": seq, "event_id": _int(system.get("EventID")), **constants}
    for name, field in fields.items():
        value = _clean(lower.get(field.lower()))
        if name in INTEGER_FIELDS and value is not None:
            value = _int(value)
        elif name in BOOLEAN_FIELDS and value is not None:
            value = int(str(value).lower() == "true")
        ev[name] = value
    if family == "access":
        ev["rights"] = rights_names(ev.get("rights_mask") or 0)
        ev.update(_origin(ev.pop("call_trace", None), ev.get("image")))
    if ev.get("pid") is None:
        ev["pid"] = _int(system.get("ProcessID"))
    return ev


# -- readers --------------------------------------------------------------------

def _system(sys_: dict[str, Any]) -> dict[str, Any]:
    """evtx-rs JSON System block → flat System fields."""
    time_created = sys_.get("TimeCreated") or {}
    execution = (sys_.get("Execution") or {}).get("#attributes") or {}
    event_id = sys_.get("EventID")
    if isinstance(event_id, dict):
        event_id = event_id.get("#text")
    return {"Channel": sys_.get("Channel"), "EventID": event_id, "Computer": sys_.get("Computer"),
            "SystemTime": (time_created.get("#attributes") or {}).get("SystemTime"),
            "EventRecordID": sys_.get("EventRecordID"), "ProcessID": execution.get("ProcessID")}


def _event_data(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("EventData") or event.get("UserData") or {}
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), dict):
        inner = next(iter(data.values()))  # UserData wraps its fields in one element
        if "#attributes" in inner or not any(isinstance(v, (str, int)) for v in data.values()):
            data = {k: v for k, v in inner.items() if k != "#attributes"}
    return data if isinstance(data, dict) else {}


# the first Channel and EventID of an evtx-rs JSON record are its System block's (it comes first)
_CHANNEL = re.compile(r'"Channel":\s*(?:"([^"\\]*)"|null)')
_EVENT_ID = re.compile(r'"EventID":\s*(?:\{(?:[^{}]|\{[^{}]*\})*?"#text":\s*)?(\d+)')


def _unmapped_system(data: str) -> dict[str, Any] | None:
    """The System fields of a record no mapping covers, read without decoding it (most records
    of a log are such); None when it may be mapped or the peek is not sure."""
    channel, event_id = _CHANNEL.search(data), _EVENT_ID.search(data)
    if channel is None or event_id is None or mapped(channel.group(1) or "", int(event_id.group(1))):
        return None
    return {"Channel": channel.group(1), "EventID": int(event_id.group(1))}


def evtx_records(path: Path, peek: bool = True) -> Iterator[Record | RecordError]:
    """peek: records no mapping covers are recognised before they are decoded, and come
    with only their Channel and EventID"""
    records = evtx.PyEvtxParser(str(path)).records_json()
    position = 0
    while True:
        try:
            rec = next(records)
        except StopIteration:
            return
        except RuntimeError as exc:  # a bad chunk or record: reported, the rest still read
            yield RecordError(f"{path} after record {position}", str(exc))
            continue
        position = rec["event_record_id"]
        unmapped = _unmapped_system(rec["data"]) if peek else None
        if unmapped is not None:
            yield position, unmapped, {}
            continue
        try:
            event = _loads(rec["data"]).get("Event") or {}
            yield position, _system(event.get("System") or {}), _event_data(event)
        except (ValueError, AttributeError, TypeError) as exc:  # a record whose structure is not an event's
            yield RecordError(f"{path} record {position}", f"malformed record: {exc}")


_FLAT_SYSTEM = {"channel": "Channel", "eventid": "EventID", "event_id": "EventID", "computer": "Computer",
                "hostname": "Computer", "computer_name": "Computer", "@timestamp": "SystemTime",
                "timecreated": "SystemTime", "eventtime": "SystemTime", "recordnumber": "EventRecordID",
                "eventrecordid": "EventRecordID", "record_id": "EventRecordID"}


def _json_record(obj: dict[str, Any], n: int) -> Record:
    if "Event" in obj:  # evtx-rs JSON
        event = obj["Event"]
        system = _system(event.get("System", {}))
        return _int(system.get("EventRecordID")) or n, system, _event_data(event)
    if "winlog" in obj:  # Winlogbeat
        w = obj["winlog"]
        system = {"Channel": w.get("channel"), "EventID": w.get("event_id"), "Computer": w.get("computer_name"),
                  "SystemTime": obj.get("@timestamp"), "ProcessID": (w.get("process") or {}).get("pid")}
        return _int(w.get("record_id")) or n, system, dict(w.get("event_data") or {})
    system = {}  # OTRF / Mordor: everything flat
    for key, value in obj.items():
        if key.lower() in _FLAT_SYSTEM:
            system.setdefault(_FLAT_SYSTEM[key.lower()], value)
    return _int(system.get("EventRecordID")) or n, system, obj


def _json_lines(stream: BinaryIO, where: str) -> Iterator[Record | RecordError]:
    text = stream.read().decode("utf-8", "replace")
    stripped = text.lstrip()
    if stripped.startswith("{") and "\n{" not in stripped.rstrip():  # one JSON document (evtx-rs dump)
        lines = [stripped]
    else:
        lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = _loads(line)
        except json.JSONDecodeError as exc:
            yield RecordError(f"{where}:{n}", f"not JSON: {exc.msg}")
            continue
        if isinstance(obj, dict):
            yield _json_record(obj, n)


def json_records(path: Path) -> Iterator[Record | RecordError]:
    name = path.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            for member in z.namelist():
                if member.lower().endswith((".json", ".jsonl")):
                    with z.open(member) as f:
                        yield from _json_lines(f, f"{path}!{member}")
    elif name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(path) as t:
            for member in t.getmembers():
                f = t.extractfile(member) if member.name.lower().endswith((".json", ".jsonl")) else None
                if f is not None:
                    yield from _json_lines(f, f"{path}!{member.name}")
    else:
        with open(path, "rb") as f:
            yield from _json_lines(f, str(path))


SUFFIXES = (".evtx", ".json", ".jsonl", ".zip", ".tar.gz", ".tgz")


def records(path: Path) -> Iterator[Record | RecordError]:
    return evtx_records(path) if path.name.lower().endswith(".evtx") else json_records(path)
