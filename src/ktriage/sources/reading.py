"""What the Windows log readers yield, and the bounds they read hostile files within.

Readers yield :data:`Record` tuples, :class:`RecordError` values (something
that could not be read, with where it is) and :class:`Skipped` values (an
archive member that is not an event log). They never raise for malformed
input: a reader that meets one goes on with the next record, line or member.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

Record = tuple[int, dict[str, Any], dict[str, Any]]  # record number, System, EventData


@dataclass(frozen=True)
class RecordError:
    where: str  # file, and record, line, chunk or member
    message: str


@dataclass(frozen=True)
class Skipped:
    where: str  # an archive member that is not an event log
    reason: str


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on what one input may make ingest hold or write. Past a bound the
    rest of that line, document or member is not read, and that is reported."""

    line_bytes: int = 16 << 20  # one JSON line
    document_bytes: int = 64 << 20  # a JSON file that is one document, not lines
    nesting: int = 64  # JSON depth (Windows events nest about 6 deep)
    member_bytes: int = 4 << 30  # one archive member, uncompressed
    archive_bytes: int = 16 << 30  # all members of one archive, uncompressed
    members: int = 10_000  # entries in one archive
    ratio: int = 250  # uncompressed / compressed size of a member or tar stream ...
    ratio_floor: int = 64 << 20  # ... once this much was uncompressed (real EVTX reach 125)


class BoundExceeded(Exception):
    """An archive member or stream grew past a ReadLimits bound."""


# control characters, line separators, lone surrogates, and the invisible format characters that reorder or
# hide text (bidi overrides and isolates, zero-width marks: "Trojan Source" names)
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069"
                          r"\ufeff\ud800-\udfff]")


def printable(text: str) -> str:
    """text on one line: control characters, line separators, lone surrogates and invisible format characters
    (hostile file and member names) escaped, so a name cannot forge or visually reorder report lines."""
    if text.isprintable():
        return text
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"), text)
