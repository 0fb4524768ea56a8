"""Keys an event carries that the model does not name: the store has no column for them, so they
are not stored — counted (a run's stats carry the count: store / unknown_keys) and each
(family, key) named once in the log, never dropped silently."""

from __future__ import annotations

import logging
from typing import Any

from ktriage.store import schema

log = logging.getLogger(__name__)
NAMED_AT_MOST = 256  # (family, key) pairs named in the log; counting goes on past it


def _shown(key: Any) -> str:
    """A key as the log shows it: a plain name as it is, anything else (a newline, a long or odd
    string, not a string) as its repr, cut at 60 characters, so a line stays one line."""
    return key if isinstance(key, str) and key.isidentifier() and len(key) <= 60 else repr(key)[:60]


class UnknownKeys:
    def __init__(self, where: str) -> None:
        self.where = where
        self.count = 0  # keys not stored, over every committed batch
        self._declared = {t: {c for c, _ in cols} | {"family"} for t, cols in schema.event_tables().items()}
        self._named: set[tuple[str, str]] = set()

    def in_event(self, ev: dict[str, Any]) -> int:
        """How many keys of ev the model does not name (each new one named in the log)."""
        family = ev["family"]
        unknown = [key for key in ev if key not in self._declared[family]]
        for key in unknown:
            if (family, key) not in self._named and len(self._named) < NAMED_AT_MOST:
                self._named.add((family, key))
                log.warning("%s: %s.%s is not a field of the model: not stored (counted in store unknown_keys)",
                            self.where, family, _shown(key))
        return len(unknown)

    def declared(self, family: str) -> set[str]:
        return self._declared[family]
