"""EVTX records through the Rust-backed ``evtx`` package, then checked against
the file's own headers (evtx_layout): what the parser skipped without a word —
a chunk cut short, zeroed or damaged, records past a truncation — is reported.

A file cut inside a chunk is shown to the parser completed with zeros, so the
records before the cut are read; a damaged file header magic is restored when
chunks follow it. Records no mapping covers are recognised before they are
decoded (``peek``) and come with only their Channel and EventID.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import evtx

from ktriage.sources.reading import ReadLimits, Record, RecordError, printable
from ktriage.sources.windows import evtx_layout, sniff
from ktriage.sources.windows.eventmap import mapped
from ktriage.sources.windows.jsonfile import NotJson, decode
from ktriage.sources.windows.shapes import Malformed, evtx_event

# the first Channel and EventID of an evtx-rs JSON record are its System block's (it comes first)
_CHANNEL = re.compile(r'"Channel":\s*(?:"([^"\\]*)"|null)')
_EVENT_ID = re.compile(r'"EventID":\s*(?:\{(?:[^{}]|\{[^{}]*\})*?"#text":\s*)?(\d+)')
_CHUNK_NUMBER = re.compile(r"chunk number (\d+)")


def _unmapped_system(data: str) -> dict[str, Any] | None:
    """The System fields of a record no mapping covers, read without decoding it (most records
    of a log are such); None when it may be mapped or the peek is not sure."""
    channel, event_id = _CHANNEL.search(data), _EVENT_ID.search(data)
    if channel is None or event_id is None or len(event_id.group(1)) > 18:
        return None
    if mapped(channel.group(1) or "", int(event_id.group(1))):
        return None
    return {"Channel": channel.group(1), "EventID": int(event_id.group(1))}


def _refused(layout: evtx_layout.EvtxLayout, head: bytes) -> str | None:
    """Why the file cannot be read as EVTX at all, or None."""
    if not layout.header.magic_ok and not evtx_layout.has_chunks(layout):
        return sniff.refusal(head, "", "EVTX file")
    if layout.size < evtx_layout.HEADER_BLOCK:
        return f"the file ends at byte {layout.size}, inside its {evtx_layout.HEADER_BLOCK}-byte header: no chunks"
    return None


def _error_place(message: str, where: str, position: int, layout: evtx_layout.EvtxLayout) -> tuple[str, int | None]:
    found = _CHUNK_NUMBER.search(message)
    if found is None:
        return f"{where} after record {position}", None
    number = int(found.group(1))
    offset = evtx_layout.HEADER_BLOCK + number * evtx_layout.CHUNK
    return f"{where} chunk {number} (offset {offset:#x})", number


def _decoded(data: str, position: int, where: str, peek: bool, nesting: int) -> Record | RecordError:
    unmapped = _unmapped_system(data) if peek else None
    if unmapped is not None:
        return position, unmapped, {}
    try:
        system, event_data = evtx_event(decode(data, nesting, exact=False))
    except (NotJson, Malformed) as exc:  # a record whose structure is not an event's
        return RecordError(f"{where} record {position}", f"malformed record: {exc}")
    return position, system, event_data


def _parse(source: Any, where: str, layout: evtx_layout.EvtxLayout, peek: bool,
           nesting: int) -> Iterator[Record | RecordError]:
    try:
        records = evtx.PyEvtxParser(source).records_json()
    except (RuntimeError, OSError) as exc:
        yield RecordError(where, f"not readable as EVTX: {printable(str(exc))}")
        return
    ids: list[int] = []
    reported: set[int] = set()
    position, errors, most = 0, 0, (len(layout.slots) + 1) * evtx_layout.MAX_RECORDS_PER_CHUNK
    while errors <= most:
        try:
            rec = next(records)
        except StopIteration:
            break
        except RuntimeError as exc:  # a bad chunk or record: reported, the rest still read
            errors += 1
            message = printable(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            place, chunk = _error_place(message, where, position, layout)
            if chunk is not None:
                reported.add(chunk)
            yield RecordError(place, message)
            continue
        position = rec["event_record_id"]
        ids.append(position)
        yield _decoded(rec["data"], position, where, peek, nesting)
    else:
        yield RecordError(where, f"more than {most} parse errors: stopped")
    ids.sort()
    yield from evtx_layout.audit(layout, ids, reported, where)


def evtx_records(path: Path, where: str | None = None, peek: bool = True,
                 limits: ReadLimits = ReadLimits()) -> Iterator[Record | RecordError]:
    """Records and located errors of one EVTX file; where names it in errors (default: path)."""
    where = printable(str(path)) if where is None else where
    with open(path, "rb") as f:
        layout = evtx_layout.scan(f, os.fstat(f.fileno()).st_size)
        f.seek(0)
        head = f.read(sniff.HEAD)
        refused = _refused(layout, head)
        if refused is not None:
            yield RecordError(where, refused)
            return
        f.seek(0)  # the parser reads the open file: a name it could not encode never reaches it
        source = evtx_layout.View(f, layout) if layout.needs_view else f
        yield from _parse(source, where, layout, peek, limits.nesting)
