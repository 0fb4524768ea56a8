"""Field predicates over events, compiled once from rule YAML.

A ``where`` mapping holds field tests that must all hold. A value is an
equality test, a list is "any of", and a mapping names operators:

    eq ne in not_in contains startswith endswith regex gt ge lt le
    icontains istartswith iendswith ibasename_in   (ignoring case: Windows paths)
    bits_any bits_all        (integer fields)
    eq_field ne_field        (compare with another field of the same event)
    basename_in              (the last path component is one of)
    exists                   (true: the field is set, false: it is missing or null)

The keys ``any``, ``all`` and ``not`` combine nested ``where`` mappings.
Unknown operators are rejected when the rule is loaded, with its location.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from ktriage.model.event import Event

Predicate = Callable[[Event], bool]


class PredicateError(ValueError):
    pass


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list) else (value,)


def _text(ev: Event, field: str) -> str:
    value = ev.get(field)
    return "" if value is None else str(value)


_STRING_OPS = ("contains", "startswith", "endswith", "regex", "basename_in", "icontains", "istartswith",
               "iendswith", "ibasename_in")
_INT_OPS = ("bits_any", "bits_all")


def _check_arg(field: str, op: str, arg: Any) -> None:
    if op in _STRING_OPS and not all(isinstance(a, str) for a in _as_tuple(arg)):
        raise PredicateError(f"{op} on field {field!r} takes strings, got {arg!r} (quote values holding ':')")
    if op in _INT_OPS and not isinstance(arg, int):
        raise PredicateError(f"{op} on field {field!r} takes an integer, got {arg!r}")


def _op(field: str, op: str, arg: Any) -> Predicate:
    _check_arg(field, op, arg)
    get = lambda ev: ev.get(field)  # noqa: E731
    if op == "eq":
        return lambda ev: ev.get(field) == arg
    if op == "ne":
        return lambda ev: ev.get(field) != arg
    if op in ("in", "not_in"):
        values = frozenset(_as_tuple(arg))
        return _member(field, values) if op == "in" else (lambda ev: ev.get(field) not in values)
    if op == "contains":
        needles = _as_tuple(arg)
        if len(needles) == 1:
            needle = needles[0]
            return lambda ev: needle in _text(ev, field)
        return lambda ev: any(n in _text(ev, field) for n in needles)
    if op == "startswith":
        prefixes = _as_tuple(arg)
        return lambda ev: _text(ev, field).startswith(prefixes)
    if op == "endswith":
        suffixes = _as_tuple(arg)
        return lambda ev: _text(ev, field).endswith(suffixes)
    if op == "regex":
        pattern = re.compile(arg)
        return lambda ev: pattern.search(_text(ev, field)) is not None
    if op in ("gt", "ge", "lt", "le"):
        compare = {"gt": lambda a: a > arg, "ge": lambda a: a >= arg, "lt": lambda a: a < arg,
                   "le": lambda a: a <= arg}[op]
        return lambda ev: isinstance(get(ev), (int, float)) and compare(get(ev))
    if op == "bits_any":
        return lambda ev: bool((get(ev) or 0) & arg)
    if op == "bits_all":
        return lambda ev: (get(ev) or 0) & arg == arg
    if op == "eq_field":
        return lambda ev: get(ev) is not None and get(ev) == ev.get(arg)
    if op == "ne_field":
        return lambda ev: get(ev) != ev.get(arg)
    if op == "basename_in":
        names = frozenset(_as_tuple(arg))
        return lambda ev: os.path.basename(_text(ev, field)) in names
    if op.startswith("i") and op[1:] in ("contains", "startswith", "endswith", "basename_in"):
        return _op_ignoring_case(field, op[1:], arg)
    if op == "exists":
        return (lambda ev: get(ev) is not None) if arg else (lambda ev: get(ev) is None)
    raise PredicateError(f"unknown operator {op!r} on field {field!r}")


def _member(field: str, values: frozenset[Any]) -> Predicate:
    def member(ev: Event) -> bool:
        try:
            return ev.get(field) in values
        except TypeError:  # an unhashable value (a list) is none of them
            return False
    return member


def _op_ignoring_case(field: str, op: str, arg: Any) -> Predicate:
    needles = tuple(a.lower() for a in _as_tuple(arg))
    low = lambda ev: _text(ev, field).lower()  # noqa: E731
    if op == "contains":
        return lambda ev: any(n in low(ev) for n in needles)
    if op == "startswith":
        return lambda ev: low(ev).startswith(needles)
    if op == "endswith":
        return lambda ev: low(ev).endswith(needles)
    names = frozenset(needles)
    return lambda ev: low(ev).replace("\\", "/").rsplit("/", 1)[-1] in names


def _all(tests: list[Predicate]) -> Predicate:
    """Every test holds (closures without a generator per call: rules run on every event)."""
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda ev: a(ev) and b(ev)
    return _first_decides(tests, False)


def _any(tests: list[Predicate]) -> Predicate:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda ev: a(ev) or b(ev)
    return _first_decides(tests, True)


def _first_decides(tests: list[Predicate], verdict: bool) -> Predicate:
    """The first test whose result is ``verdict`` decides; when none is, the opposite holds."""
    def decide(ev: Event) -> bool:
        for test in tests:
            if bool(test(ev)) is verdict:
                return verdict
        return not verdict
    return decide


def _field(field: str, spec: Any) -> Predicate:
    if isinstance(spec, dict):
        return _all([_op(field, op, arg) for op, arg in spec.items()])
    if isinstance(spec, list):
        return _op(field, "in", spec)
    return _op(field, "eq", spec)


def compile_where(spec: dict[str, Any]) -> Predicate:
    """A predicate from a ``where`` mapping; raises PredicateError on a bad spec."""
    if not isinstance(spec, dict):
        raise PredicateError(f"a where clause must be a mapping, not {type(spec).__name__}")
    tests: list[Predicate] = []
    for key, value in spec.items():
        if key in ("any", "all"):
            subs = [compile_where(v) for v in _as_tuple(value)]
            tests.append(_any(subs) if key == "any" else _all(subs))
        elif key == "not":
            inner = compile_where(value)
            tests.append(lambda ev, p=inner: not p(ev))
        else:
            tests.append(_field(key, value))
    return _all(tests)
