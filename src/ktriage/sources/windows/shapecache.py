"""Work done once per record shape (the tuple of a record's field names), not per record.

Windows records of one kind carry the same field names in the same order, so how to
read their fields (which key answers a name, ignoring case) is planned once per shape
and kept; the same holds for values that repeat (a CallTrace). Bounded: at most
``entries`` keys of at most ``chars`` characters each; a file with a new shape on every
line costs a plan each time, never memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

Plan = TypeVar("Plan")


class ShapeCache(Generic[Plan]):
    """plan(keys), remembered per tuple of keys."""

    def __init__(self, plan: Callable[..., Plan], entries: int = 1024, chars: int = 4096) -> None:
        self._plan, self._entries, self._chars = plan, entries, chars
        self._plans: dict[tuple[str | None, ...], Plan] = {}

    def __call__(self, keys: tuple[str | None, ...]) -> Plan:
        found = self._plans.get(keys)
        if found is not None:
            return found
        plan = self._plan(keys)
        if sum(map(len, filter(None, keys))) <= self._chars:
            if len(self._plans) >= self._entries:
                self._plans.clear()
            self._plans[keys] = plan
        return plan


def caseless(keys: tuple[str, ...]) -> dict[str, str]:
    """Lower-cased name → the key that has it (the last one, when several differ only in case)."""
    return {k.lower(): k for k in keys}
