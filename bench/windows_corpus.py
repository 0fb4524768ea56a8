"""A larger Windows corpus for bench/windows_ingest.py, built at run time in a temporary
directory from the dev records (never committed).

- OTRF/Mordor-style JSON lines in zips: every record of the dev EVTX files flattened the
  way the Security-Datasets are (System and EventData fields side by side, with the
  NXLog/Logstash fields and a ``Message`` text those files carry), LINES_PER_ZIP a zip.
  Each copy names its own host, so no zip is a duplicate of another.
- copies of the dev EVTX files, each with one byte of the file header's unused padding
  (past its 128 used bytes, outside its checksum) set to the copy's number: the same
  records, a different SHA-256, so none is skipped as already ingested.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import evtx
import orjson

LINES_PER_ZIP = 12_000
_PADDING = 4000  # a byte of the EVTX file header block that no field uses


def dev_records(files: list[Path]) -> Iterator[dict[str, Any]]:
    """Every readable record of the dev EVTX files, decoded."""
    for f in files:
        records = evtx.PyEvtxParser(str(f), number_of_threads=1).records_json()
        while True:
            try:
                rec = next(records)
            except StopIteration:
                break
            except RuntimeError:
                continue
            yield orjson.loads(rec["data"])["Event"]


def _attribute(system: dict[str, Any], name: str, attribute: str) -> Any:
    value = system.get(name)
    return value.get("#attributes", {}).get(attribute) if isinstance(value, dict) else None


def _signed(keywords: Any) -> Any:
    """Keywords as NXLog writes them in the OTRF sets: the 64 bits as a signed integer
    (0x8000000000000000 is -9223372036854775808)."""
    if not isinstance(keywords, str) or not keywords.startswith("0x"):
        return keywords
    value = int(keywords, 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def otrf_line(event: dict[str, Any], host: str, number: int) -> bytes:
    """One record as an OTRF JSON line."""
    system = event.get("System") or {}
    data = event.get("EventData") or {}
    data = data if isinstance(data, dict) else {}
    event_id = system.get("EventID")
    event_id = event_id.get("#text") if isinstance(event_id, dict) else event_id
    created = str(_attribute(system, "TimeCreated", "SystemTime") or "2020-01-01T00:00:00.000Z")
    message = "\r\n".join(f"{k}: {v}" for k, v in data.items() if not isinstance(v, (dict, list)))
    line = {"@timestamp": created, "@version": "1", "tags": ["mordorDataset"], "host": "wec.internal.cloudapp.net",
            "port": 60000 + number % 5000, "Hostname": host, "Keywords": _signed(system.get("Keywords")),
            "EventType": "INFO", "SeverityValue": 2, "Severity": "INFO", "EventID": event_id,
            "SourceName": _attribute(system, "Provider", "Name"), "ProviderGuid": _attribute(system, "Provider", "Guid"),
            "Version": system.get("Version"), "Task": system.get("Task"), "OpcodeValue": system.get("Opcode"),
            "RecordNumber": number, "ExecutionProcessID": _attribute(system, "Execution", "ProcessID"),
            "ThreadID": _attribute(system, "Execution", "ThreadID"), "Channel": system.get("Channel"),
            "Domain": "NT AUTHORITY", "AccountName": "SYSTEM", "UserID": _attribute(system, "Security", "UserID"),
            "AccountType": "User", "Category": f"event {event_id}", "Opcode": "Info",
            "EventReceivedTime": created[:19].replace("T", " "), "SourceModuleName": "eventlog",
            "SourceModuleType": "im_msvistalog", "Message": message, **data}
    return orjson.dumps(line, option=orjson.OPT_NON_STR_KEYS)


def write_otrf_zips(records: list[dict[str, Any]], out: Path, copies: int) -> list[Path]:
    """copies × the records as JSON lines, LINES_PER_ZIP per zip; returns the zips."""
    zips: list[Path] = []
    lines: list[bytes] = []

    def flush() -> None:
        path = out / f"otrf-{len(zips):03d}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(f"otrf-{len(zips):03d}.json", b"\n".join(lines) + b"\n")
        zips.append(path)
        lines.clear()

    for copy in range(copies):
        for number, event in enumerate(records, 1):
            lines.append(otrf_line(event, f"WORKSTATION{copy}", number))
            if len(lines) == LINES_PER_ZIP:
                flush()
    if lines:
        flush()
    return zips


def write_evtx_copies(files: list[Path], out: Path, copies: int) -> list[Path]:
    """copies × every EVTX file, each with its own SHA-256 (see the module doc)."""
    written: list[Path] = []
    for copy in range(copies):
        for i, f in enumerate(files):
            data = bytearray(f.read_bytes())
            if len(data) > _PADDING:
                data[_PADDING] = (copy + 1) % 256
            path = out / f"copy{copy}-{i:03d}-{f.name}"
            path.write_bytes(bytes(data))
            written.append(path)
    return written


def build(files: list[Path], out: Path, otrf_copies: int, evtx_copies: int) -> tuple[list[Path], list[Path]]:
    """The zips and the EVTX copies, written under out."""
    records = list(dev_records(files))
    return write_otrf_zips(records, out, otrf_copies), write_evtx_copies(files, out, evtx_copies)
