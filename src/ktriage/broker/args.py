"""Each verb's arguments, declared once and checked into typed values.

Every failure is one ProtocolError, code ``bad_args``, whose message starts
with the argument's name (``"ttl_s: must be a number 0..604800, got nan"``).
Types are strict: an integer is a JSON integer (not a float, a bool or a
string), a number is a finite integer or float, and every value has a range.
Unknown arguments are refused, not ignored: a misspelt ``stream`` for
``streams`` would otherwise subscribe to everything without a word.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ktriage.broker.protocol import ProtocolError, shown
from ktriage.model.families import KERNEL_FAMILIES

PID_MAX = 1 << 22  # the kernel's PID_MAX_LIMIT
MAX_QUEUE = 65536  # the most a client may ask for
MAX_DEPTH = 1024  # generations of children a subscription follows
MAX_TTL_S = 7 * 86400
STREAMS = frozenset(KERNEL_FAMILIES) | {"detection"}
ALIASES = {"handle": "access"}

Checker = Callable[[str, Any], Any]
_REQUIRED = object()


def bad(name: str, problem: str) -> ProtocolError:
    return ProtocolError("bad_args", f"{name}: {problem}")


def _kind(value: Any) -> str:
    return {bool: "a boolean", str: "a string", list: "a list", dict: "an object", float: "a float",
            type(None): "null"}.get(type(value), type(value).__name__)


def integer(low: int, high: int) -> Checker:
    def check(name: str, value: Any) -> int:
        if type(value) is not int:
            raise bad(name, f"must be an integer {low}..{high}, got {_kind(value)}")
        if not low <= value <= high:
            raise bad(name, f"must be an integer {low}..{high}, got {shown(value)}")
        return value
    return check


def number(low: float, high: float) -> Checker:
    def check(name: str, value: Any) -> float:
        if type(value) not in (int, float):
            raise bad(name, f"must be a number {low:g}..{high:g}, got {_kind(value)}")
        if not (math.isfinite(value) and low <= value <= high):
            raise bad(name, f"must be a number {low:g}..{high:g}, got {shown(value)}")
        return float(value)
    return check


def streams(name: str, value: Any) -> frozenset[str]:
    """A comma-separated string or a non-empty list of stream names ("all": every stream)."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise bad(name, f"must be a non-empty list of stream names or a comma-separated string, got {_kind(value)}")
    wanted = {ALIASES.get(n.strip(), n.strip()) for n in names}
    unknown = sorted(wanted - STREAMS - {"all"})
    if unknown:
        raise bad(name, f"unknown stream {shown(unknown[0])} (streams: all, {', '.join(sorted(STREAMS))})")
    return STREAMS if "all" in wanted else frozenset(wanted)


def pid_list(most: int) -> Checker:
    one = integer(1, PID_MAX)

    def check(name: str, value: Any) -> list[int]:
        if not isinstance(value, list):
            raise bad(name, f"must be a list of pids, got {_kind(value)}")
        if len(value) > most:
            raise bad(name, f"at most {most} pids in one request, got {len(value)}")
        for pid in value:
            one(name, pid)
        return list(dict.fromkeys(value))  # once each, in the order given
    return check


@dataclass(frozen=True)
class Arg:
    check: Checker
    default: Any = _REQUIRED


PID = Arg(integer(1, PID_MAX))
SUBSCRIPTION = {"streams": Arg(streams, "all"), "depth": Arg(integer(0, MAX_DEPTH), 3),
                "ttl_s": Arg(number(0, MAX_TTL_S), 120.0), "queue": Arg(integer(1, MAX_QUEUE), None)}


def specs(max_pids: int) -> dict[str, dict[str, Arg]]:
    """Every verb's arguments (name -> type and default)."""
    return {
        "hello": {}, "stream": {}, "stats": {}, "shutdown": {},
        "subscribe": {"pid": PID, **SUBSCRIPTION},
        "unsubscribe": {"pid": PID},
        "set_pids": {"pids": Arg(pid_list(max_pids)), **SUBSCRIPTION},
        "get_event": {"timeout": Arg(number(0, 60), 1.0), "max": Arg(integer(0, MAX_QUEUE), 1)},
        "query_image": {"pid": PID},
    }


def check_args(spec: dict[str, Arg], verb: str, args: dict[str, Any]) -> dict[str, Any]:
    """args checked against spec: every declared name, with its default when absent."""
    for name in args:
        if name not in spec:
            raise bad(name if len(name) <= 40 else shown(name, 40),
                      f"unknown argument of {verb} (arguments: {', '.join(spec) or 'none'})")
    out = {}
    for name, arg in spec.items():
        if name in args:
            out[name] = arg.check(name, args[name])
        elif arg.default is _REQUIRED:
            raise bad(name, f"missing (arguments of {verb}: {', '.join(spec)})")
        else:
            out[name] = arg.default
    return out
