"""Is a dict an event of the model? Two questions, answered in words:

* :func:`problem`: is a dict from outside (a JSON-lines capture, a stored row) an event? The first
  thing wrong with it, so readers can refuse it by line before the engine or the store sees it.
* :func:`emitted_problems`: does an event ktriage's own sources made keep the contract strictly?
  Every key declared for its family, every value of its column's type, the keys every source sets,
  a detection's own fields. The tests run every source and hold each event to it.
"""

from __future__ import annotations

import json
from typing import Any

from ktriage.model.families import FAMILIES, columns

_U64 = 1 << 64
_TYPES = {"INTEGER": (int,), "TEXT": (str,), "REAL": (float, int)}
_NAMES = {"INTEGER": "an integer", "TEXT": "a string", "REAL": "a number"}
REQUIRED = ("ts", "seq")


def _fits(value: Any, sqltype: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, _TYPES[sqltype]):
        return False
    return not isinstance(value, int) or -(_U64 >> 1) <= value < _U64


def problem(ev: Any, typed: bool = True) -> str | None:
    """Why ev is not an event of the model, or None. typed=False checks only what ordering needs
    (family, ts, seq): a stored value that did not fit its column is kept as text, on purpose."""
    if not isinstance(ev, dict):
        return f"an event is a JSON object, not {type(ev).__name__}"
    family = ev.get("family")
    if not isinstance(family, str) or family not in FAMILIES:
        return f"unknown family {family!r}"
    for name in REQUIRED:
        if ev.get(name) is None:
            return f"{family} event without {name}"
        if not _fits(ev[name], "INTEGER"):
            return f"{family}.{name} must be an integer (64 bits at most), not {ev[name]!r:.40}"
    for col in columns(family) if typed else ():
        value = ev.get(col.name)
        if value is not None and not _fits(value, col.sqltype):
            return f"{family}.{col.name} must be {_NAMES[col.sqltype]} (64 bits at most), not {value!r:.40}"
    return None


def model_fields(ev: dict[str, Any]) -> dict[str, Any]:
    """ev with only the keys the model names (what the store would keep)."""
    known = {c.name for c in columns(ev["family"])}
    return {k: v for k, v in ev.items() if k in known or k == "family"}


# What every source sets on every event. ``pid`` is always a key; it is None only where no
# process acted (a detection of the sensor's own state, a Windows record that names none).
SET_BY_EVERY_SOURCE = ("ts", "host", "source", "seq")
ALWAYS_A_KEY = ("pid",)
# What a source sets beyond those, by the name its ``source`` starts with: the kernel sensor knows
# the acting task of every record; a Windows record keeps the EventID it came from.
SET_BY_SOURCE = {"ebpf": ("pid", "tid", "ppid", "uid", "comm", "mntns", "image"), "evtx": ("event_id",)}
DETECTION_FIELDS = ("name", "severity", "reason", "rule", "event_ids", "evidence")
_DECLARED = {family: {c.name: c.sqltype for c in columns(family)} for family in FAMILIES}


def emitted_problems(ev: Any) -> list[str]:
    """Every way an event one of ktriage's sources emitted breaks the contract, one line each;
    empty when it keeps it. Stricter than :func:`problem`: a key the model does not name (the
    store would drop it) and a value that does not fit its column (the store would move it to
    ``unfit``) are problems here."""
    if not isinstance(ev, dict):
        return [f"an event is a dict, not {type(ev).__name__}"]
    family = ev.get("family")
    if not isinstance(family, str) or family not in FAMILIES:
        return [f"unknown family {family!r}"]
    declared = _DECLARED[family]
    out = [f"{family}.{key}: not a field of the model" for key in ev if key not in declared and key != "family"]
    out += [f"{family}.{key} must be {_NAMES[declared[key]]} (64 bits at most), not {value!r:.40}"
            for key, value in ev.items() if key in declared and value is not None and not _fits(value, declared[key])]
    out += [f"{family} event without {name}" for name in SET_BY_EVERY_SOURCE if ev.get(name) is None]
    out += [f"{family} event without the key {name}" for name in ALWAYS_A_KEY if name not in ev]
    kind = ev["source"].split(":", 1)[0] if isinstance(ev.get("source"), str) else ""
    out += [f"{family} event of {kind} without {name}" for name in SET_BY_SOURCE.get(kind, ()) if ev.get(name) is None]
    if family == "detection":
        out += _detection_problems(ev)
    return out


def _detection_problems(ev: dict[str, Any]) -> list[str]:
    out = [f"detection without {name}" for name in DETECTION_FIELDS if ev.get(name) is None]
    severity = ev.get("severity")
    if isinstance(severity, int) and not 1 <= severity <= 10:
        out.append(f"detection.severity must be 1-10, not {severity}")
    ids = _json_list(ev.get("event_ids"))
    if ids is None or not all(isinstance(i, str) for i in ids):
        out.append(f"detection.event_ids must be a JSON list of event ids, not {ev.get('event_ids')!r:.60}")
    evidence = _json_list(ev.get("evidence"))
    if evidence is None or not all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) for e in evidence):
        out.append(f"detection.evidence must be a JSON list of [label, value], not {ev.get('evidence')!r:.60}")
    return out


def _json_list(text: Any) -> list[Any] | None:
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, list) else None
