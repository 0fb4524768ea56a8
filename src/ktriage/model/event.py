"""The event contract (DESIGN §3): the one type every source emits and every stage takes.

An event is a plain dict whose keys are declared in families.py: the common
columns, ``family``, and the columns of its family. check.py holds every source
to that schema (``emitted_problems``, tested per source in tests/test_contract.py)
and the store counts a key it does not name (store/unknown.py).

A dict with a declared schema, not a typed record, measured (bench/event_type.py,
the sensor's real events, RESULTS.md 2026-12-03): over building, the engine's
reads, orjson and the SQLite insert, a slots dataclass per family costs 1.19x the
dict and a NamedTuple 1.14x (medians of 9 rounds; the rounds range 1.04-1.54).
Records read a field faster (0.6-0.7x) but are slower to build (1.2-1.4x, every
column set) and to serialise (1.35-1.43x, and 560 bytes a line against 489:
every None column written), and the store binds all their columns. The rules,
the store, the broker and JSON output take a dict as it is.
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
