"""Is a dict from outside (a JSON-lines capture) an event of the model? The
first thing wrong with it, said in words, so readers can refuse it by line
before the engine or the store sees it."""

from __future__ import annotations

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
