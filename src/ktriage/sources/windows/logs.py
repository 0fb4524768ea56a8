"""Windows event logs → normalized events.

:func:`records` reads one file by what it holds (sniff): EVTX (evtx_file), JSON
lines or documents in the OTRF/Mordor, Winlogbeat and evtx-rs shapes
(jsonfile, shapes), or .zip/.tar.gz archives of them (archives). Whatever is
unreadable comes as located :class:`RecordError` values in the stream, never
raised, so the rest is ingested. :func:`normalize` maps one record with
eventmap.MAPPINGS onto the event model's types: a text field gets text (an
object or list as its JSON), a number field a 64-bit integer; a value that does
not fit is kept as text in ``unfit`` (a JSON object, field → text), never lost.
"""

from __future__ import annotations

import json
import ntpath
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from ktriage.model.event import Event
from ktriage.sources.reading import ReadLimits, Record, RecordError, Skipped, printable
from ktriage.sources.windows import sniff
from ktriage.sources.windows.eventmap import BOOLEAN_FIELDS, INTEGER_FIELDS, LOGS, MAPPINGS, mapped, rights_names
from ktriage.sources.windows.evtx_file import evtx_records
from ktriage.sources.windows.jsonfile import json_records
from ktriage.sources.windows.shapecache import ShapeCache, caseless

__all__ = ["SUFFIXES", "RecordError", "Skipped", "evtx_records", "mapped", "normalize", "records"]

_INT_MIN, _INT_END = -(1 << 63), 1 << 64  # what a 64-bit column holds (unsigned values stored as signed)


def _ts(text: str) -> int:
    """ns since the epoch from a Windows SystemTime / @timestamp string; raises ValueError."""
    text = text.strip().replace(" UTC", "").replace("Z", "")
    whole, _, frac = text.partition(".")
    base = datetime.fromisoformat(whole.replace(" ", "T")).replace(tzinfo=timezone.utc)
    return int(base.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)


def _time(value: Any, unfit: dict[str, str]) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, str):
        try:
            return _ts(value)
        except (ValueError, OverflowError):
            pass
    unfit["ts"] = _text(value)
    return 0


def _parse_int(value: Any) -> int | None:
    """An integer from decimal or 0x-hex text (the Security log writes hex), or an integral float."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text, 16) if text[:3].lower().lstrip("+-").startswith("0x") else int(text)
        except ValueError:
            return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _int(value: Any) -> int | None:
    return value if type(value) is int else _parse_int(value)


def _integer(name: str, value: Any, unfit: dict[str, str]) -> int | None:
    number = value if type(value) is int else int(value) if type(value) is bool else _parse_int(value)
    if number is None or not _INT_MIN <= number < _INT_END:
        unfit[name] = _text(value)
        return None
    return number


def _boolean(name: str, value: Any, unfit: dict[str, str]) -> int | None:
    if isinstance(value, (bool, int)) and value in (0, 1):
        return int(value)
    word = str(value).strip().lower() if isinstance(value, str) else None
    if word in ("true", "false"):
        return int(word == "true")
    unfit[name] = _text(value)
    return None


def _text(value: Any) -> str:
    """A field value as text: strings as they are, anything else as its JSON."""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer beyond 64 bits inside a list or object
        return json.dumps(value, ensure_ascii=False)


def _clean(value: Any) -> Any:
    return None if value in ("", "-", None) else value


DOTNET_RUNTIME = frozenset({"clr.dll", "coreclr.dll", "clrjit.dll", "mscorwks.dll", "mscoreei.dll", "mscorlib.dll",
                            "system.private.corelib.dll"})


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
    unknown = _unbacked_frames(frames)
    return {"stack": json.dumps(frames), "origin_module": frames[0][1], "origin_class": cls,
            "stack_anomaly": f"{unknown} UNKNOWN frame(s): code in memory no module backs" if unknown else None}


def _is_dotnet(module: str) -> bool:
    return module.endswith(".ni.dll") or module in DOTNET_RUNTIME


def _unbacked_frames(frames: list[list[Any]]) -> int:
    """UNKNOWN frames above the first .NET frame: below it they are methods the JIT compiled, which
    call the API through the framework (PowerShell's P/Invoke), not code someone injected."""
    unknown = 0
    for _, sym in frames:
        module = sym.split("+")[0].lower()
        if _is_dotnet(module):
            break
        unknown += sym == "[unknown]"
    return unknown


_origins = ShapeCache(lambda key: _origin(*key))  # a process's CallTraces repeat: each parsed once
_TEXT, _INTEGER, _BOOLEAN = "text", "integer", "boolean"
Reads = tuple[tuple[str, str, str], ...]  # event field, EventData name lower-cased, its type


def _reads(fields: dict[str, str]) -> Reads:
    return tuple((name, field.lower(), _INTEGER if name in INTEGER_FIELDS else _BOOLEAN if name in BOOLEAN_FIELDS
                  else _TEXT) for name, field in fields.items())


_READS = {key: _reads(fields) for key, (_, _, fields) in MAPPINGS.items()}  # planned once, not per record
_caseless_keys = ShapeCache(caseless)


def _fields(reads: Reads, data: dict[str, Any], ev: Event, unfit: dict[str, str]) -> None:
    keys = _caseless_keys(tuple(data))
    for name, field, kind in reads:
        key = keys.get(field)
        value = None if key is None else _clean(data[key])
        if value is not None:
            if kind is _INTEGER:
                value = _integer(name, value, unfit)
            elif kind is _BOOLEAN:
                value = _boolean(name, value, unfit)
            elif type(value) is not str:
                value = _text(value)
        ev[name] = value


def normalize(system: dict[str, Any], data: dict[str, Any], source: str, seq: int) -> Event | None:
    """One Windows record as an event, or None when no mapping covers it."""
    channel = system.get("Channel")
    log = LOGS.get(channel.lower()) if isinstance(channel, str) else None
    event_id = _int(system.get("EventID")) if log else None
    mapping = MAPPINGS.get((log, event_id)) if log else None
    if mapping is None:
        return None
    family, constants, _ = mapping
    unfit: dict[str, str] = {}
    host = system.get("Computer")
    ev: Event = {"family": family, "ts": _time(system.get("SystemTime"), unfit),
                 "host": host if host is None or type(host) is str else _text(host), "source": source, "seq": seq,
                 "event_id": event_id, **constants}
    _fields(_READS[(log, event_id)], data, ev, unfit)
    if family == "access":
        ev["rights"] = rights_names(ev.get("rights_mask") or 0)
        ev.update(_origins((ev.pop("call_trace", None), ev.get("image"))))
    if ev.get("pid") is None and "pid" not in unfit:
        process_id = _clean(system.get("ProcessID"))
        ev["pid"] = None if process_id is None else _integer("pid", process_id, unfit)
    if unfit:
        ev["unfit"] = _text(unfit)
    return ev


# -- readers --------------------------------------------------------------------

SUFFIXES = sniff.LOG_SUFFIXES + sniff.ARCHIVE_SUFFIXES  # what a directory walk picks up


def records(path: Path, limits: ReadLimits = ReadLimits()) -> Iterator[Record | RecordError | Skipped]:
    """Every record of one file, by what the file holds; a file that is no event log
    is one error naming what it is."""
    where = printable(str(path))
    with open(path, "rb") as f:
        head = f.read(sniff.HEAD)
    found = sniff.kind(head, path.name)
    if found == sniff.EVTX:
        yield from evtx_records(path, where, limits=limits)
    elif found in (sniff.ZIP, sniff.TAR):
        from ktriage.sources.windows import archives  # zipfile, tarfile and the decompressors: loaded for archives only

        yield from (archives.zip_records if found == sniff.ZIP else archives.tar_records)(path, limits)
    elif found == sniff.JSON:
        with open(path, "rb") as f:
            yield from json_records(f, where, limits)
    else:
        yield RecordError(where, sniff.refusal(head, path.name))
