"""The event contract (DESIGN §3): the one type every source emits and every stage takes.

An event is a plain dict whose keys are declared in families.py: the common
columns, ``family``, and the columns of its family (checked by check.py). A
dict, not a class: sources build millions of them and the store, the rules,
the broker and JSON output all take them as they are (bench/event_type.py
measures the choice).
"""

from __future__ import annotations

from typing import Any

from ktriage.model.families import FAMILIES

Event = dict[str, Any]
_ORDER = {family: i for i, family in enumerate(FAMILIES)}


def event_id(ev: Event) -> str:
    """Stable id of an event: family/source#seq (unique per host)."""
    return f"{ev['family']}/{ev['source']}#{ev['seq']}"


def live_order(ev: Event) -> tuple[int, int]:
    """The order a source emitted its events in: by seq, and within one record (an exec's process
    event and its derived image event share a seq) in the model's family order."""
    return ev["seq"], _ORDER.get(ev["family"], len(_ORDER))
