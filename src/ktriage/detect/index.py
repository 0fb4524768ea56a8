"""Which rules an event can concern, found with two dict lookups instead of
evaluating every rule's predicates.

Every where-clause of a rule (each step, each mark, the ``until`` clause) has
*gates*: the fields it pins to a set of values at its top level (``family:
access``, ``action: [exec, fork]``, ``how: {in: [mmap]}``). An event can only
satisfy a clause whose gates all admit it. The index keys rules by family, then
by the field that family's clauses pin most often (its *discriminator*); a rule is
listed under a value when one of its clauses admits the value or leaves the
field free. The lists keep the engine's order (strongest first).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping
from typing import Any

Gate = Mapping[str, frozenset[Any]]


def gate_of(spec: Any) -> Gate:
    """The field → allowed values pins of one where mapping (``any`` pins a field
    every alternative pins, to the union of their values)."""
    if not isinstance(spec, dict):
        return {}
    pins: dict[str, frozenset[Any]] = {}
    for key, value in spec.items():
        if key == "not":
            continue
        if key in ("any", "all"):
            subs = [gate_of(v) for v in (value if isinstance(value, list) else [value])]
            found = _union(subs) if key == "any" else _intersection(subs)
        else:
            values = _pinned_values(value)
            found = {} if values is None else {key: values}
        for field, values in found.items():
            pins[field] = pins[field] & values if field in pins else values
    return pins


def _union(gates: list[Gate]) -> dict[str, frozenset[Any]]:
    common = set.intersection(*(set(g) for g in gates)) if gates else set()
    return {f: frozenset().union(*(g[f] for g in gates)) for f in common}


def _intersection(gates: list[Gate]) -> dict[str, frozenset[Any]]:
    out: dict[str, frozenset[Any]] = {}
    for g in gates:
        for f, values in g.items():
            out[f] = out[f] & values if f in out else values
    return out


def _pinned_values(value: Any) -> frozenset[Any] | None:
    if isinstance(value, dict):
        if len(value) != 1:
            return None
        (op, arg), = value.items()
        if op == "eq":
            value = arg
        elif op == "in":
            value = arg if isinstance(arg, list) else [arg]
        else:
            return None
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, Hashable) and not isinstance(v, (dict, list)) for v in items):
        return None
    return frozenset(items)


def _admits(gate: Gate, field: str, value: Any) -> bool:
    return field not in gate or value in gate[field]


class RuleIndex:
    """rules_for(event) → the rules whose clauses could hold for it, strongest first."""

    def __init__(self, rules: list[Any]) -> None:
        self._all = rules
        families = {f for r in rules for g in r.gates for f in g.get("family", ())}
        self._unpinned = [r for r in rules if any("family" not in g for g in r.gates)]
        self._tables: dict[str, tuple[str | None, dict[Any, list[Any]], list[Any]]] = {}
        for family in families:
            self._tables[family] = self._table(family)

    def _table(self, family: str) -> tuple[str | None, dict[Any, list[Any]], list[Any]]:
        # per rule (engine order), its clauses that can hold for this family
        clauses = [(r, [g for g in r.gates if _admits(g, "family", family)]) for r in self._all]
        clauses = [(r, gates) for r, gates in clauses if gates]
        field = _discriminator([g for _, gates in clauses for g in gates])
        if field is None:
            return None, {}, [r for r, _ in clauses]
        free = [r for r, gates in clauses if any(field not in g for g in gates)]
        values = {v for _, gates in clauses for g in gates for v in g.get(field, ())}
        by_value = {v: [r for r, gates in clauses if any(_admits(g, field, v) for g in gates)] for v in values}
        return field, by_value, free

    def rules_for(self, ev: Mapping[str, Any]) -> list[Any]:
        table = self._tables.get(ev.get("family"))  # type: ignore[arg-type]
        if table is None:
            return self._unpinned
        field, by_value, free = table
        if field is None:
            return free
        try:
            return by_value.get(ev.get(field), free)
        except TypeError:  # an unhashable value equals no pinned value
            return free


def _discriminator(gates: list[Gate]) -> str | None:
    """The pinned field (other than family) that most of the family's clauses pin."""
    counts = Counter(f for g in gates for f in g if f != "family")
    return counts.most_common(1)[0][0] if counts else None
