"""The JSON shapes a Windows record comes in, each → (record number, System, EventData).

evtx-rs (``{"Event": {"System": …, "EventData": …}}``, what the EVTX reader
decodes too), Winlogbeat (``{"winlog": …}``) and OTRF/Mordor (everything flat).
A part of the wrong JSON type (``"Event": "abc"``, ``event_data`` a list) is
:class:`Malformed`, raised with the path to it; a missing or null part is empty.
"""

from __future__ import annotations

from typing import Any

from ktriage.sources.reading import Record
from ktriage.sources.windows.shapecache import ShapeCache


class Malformed(ValueError):
    """A record whose structure is not an event's."""


_KINDS = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean",
          type(None): "null"}


def kind(value: Any) -> str:
    """A JSON value's type in words, for messages."""
    return _KINDS.get(type(value), type(value).__name__)


def _object(value: Any, what: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if value is None or value == "":
        return {}
    raise Malformed(f"{what} is {kind(value)}, not an object")


_SCALARS = (str, int, float, bool, type(None))


def _checked(system: dict[str, Any], shape: str) -> dict[str, Any]:
    """System fields a record is mapped by must be what they say: text, or a number."""
    channel, event_id, created = system.get("Channel"), system.get("EventID"), system.get("SystemTime")
    if not isinstance(channel, (str, type(None))):
        raise Malformed(f"{shape} Channel is {kind(channel)}, not text")
    if not isinstance(event_id, (int, str, type(None))) or isinstance(event_id, bool):
        raise Malformed(f"{shape} EventID is {kind(event_id)}, not a number")
    if not isinstance(created, _SCALARS):
        raise Malformed(f"{shape} time is {kind(created)}, not text")
    return system


def evtx_system(system: Any) -> dict[str, Any]:
    """evtx-rs JSON System block → flat System fields."""
    system = _object(system, "Event.System")
    created = _object(_object(system.get("TimeCreated"), "System.TimeCreated").get("#attributes"),
                      "System.TimeCreated.#attributes")
    execution = _object(_object(system.get("Execution"), "System.Execution").get("#attributes"),
                        "System.Execution.#attributes")
    event_id = system.get("EventID")
    if isinstance(event_id, dict):
        event_id = event_id.get("#text")
    return _checked({"Channel": system.get("Channel"), "EventID": event_id, "Computer": system.get("Computer"),
                     "SystemTime": created.get("SystemTime"), "EventRecordID": system.get("EventRecordID"),
                     "ProcessID": execution.get("ProcessID")}, "System")


def evtx_event_data(event: dict[str, Any]) -> dict[str, Any]:
    """EventData, or UserData's one wrapped element, as a flat dict."""
    data = event.get("EventData") or event.get("UserData")
    data = _object(data, "Event.EventData" if event.get("EventData") else "Event.UserData")
    if len(data) == 1 and isinstance(next(iter(data.values())), dict):
        inner = next(iter(data.values()))  # UserData wraps its fields in one element
        if "#attributes" in inner or not any(isinstance(v, (str, int)) for v in data.values()):
            data = {k: v for k, v in inner.items() if k != "#attributes"}
    return data


def evtx_event(document: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """An evtx-rs JSON record (``{"Event": …}``) → (System, EventData)."""
    event = _object(_object(document, "the record").get("Event"), "Event")
    return evtx_system(event.get("System")), evtx_event_data(event)


_FLAT_SYSTEM = {"channel": "Channel", "eventid": "EventID", "event_id": "EventID", "computer": "Computer",
                "hostname": "Computer", "computer_name": "Computer", "@timestamp": "SystemTime",
                "timecreated": "SystemTime", "eventtime": "SystemTime", "recordnumber": "EventRecordID",
                "eventrecordid": "EventRecordID", "record_id": "EventRecordID"}


def _record_number(value: Any, default: int) -> int:
    """A record id (a number, or digits as text), else default."""
    if type(value) is str and value.isdigit() and len(value) < 20:
        value = int(value)
    return value if type(value) is int and value > 0 else default


def _winlogbeat(obj: dict[str, Any], n: int) -> Record:
    w = _object(obj["winlog"], "winlog")
    process = _object(w.get("process"), "winlog.process")
    system = _checked({"Channel": w.get("channel"), "EventID": w.get("event_id"), "Computer": w.get("computer_name"),
                       "SystemTime": obj.get("@timestamp"), "ProcessID": process.get("pid")}, "winlog")
    return _record_number(w.get("record_id"), n), system, dict(_object(w.get("event_data"), "winlog.event_data"))


def _flat_plan(keys: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(key, System name) of the keys that name System fields, the first key of each name."""
    plan: dict[str, str] = {}
    for key in keys:
        name = _FLAT_SYSTEM.get(key.lower())
        if name is not None and name not in plan:
            plan[name] = key
    return tuple((key, name) for name, key in plan.items())


_flat_plans = ShapeCache(_flat_plan)


def _flat(obj: dict[str, Any], n: int) -> Record:
    system = {name: obj[key] for key, name in _flat_plans(tuple(obj))}  # OTRF / Mordor: everything flat
    return _record_number(system.get("EventRecordID"), n), _checked(system, "the record's"), obj


def json_record(obj: dict[str, Any], n: int) -> Record:
    """One decoded JSON object in any of the three shapes; n numbers it when it carries no record id."""
    if "Event" in obj:
        system, data = evtx_event(obj)
        return _record_number(system.get("EventRecordID"), n), system, data
    if "winlog" in obj:
        return _winlogbeat(obj, n)
    return _flat(obj, n)
