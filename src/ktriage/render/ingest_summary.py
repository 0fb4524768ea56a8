"""The summary table at the end of ``ktriage ingest`` (after Hayabusa's results
summary): per file the events read, unmapped records, unreadable chunks/records
and detections by severity band, the totals, and the top detections by name.

Plain text in whitespace-separated columns whose last one is the file (a path
may hold spaces; it is already escaped by ``printable``), the same on a
terminal and a pipe. Long runs are bounded, never cut silently: files with a
detection of severity 5 or more or an unreadable part come first, the most
severe first; past ``rows`` files the rest are summed in one row that says how
many it holds (and how many of them needed attention), so the totals are always
the sums of the rows shown.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Protocol, TextIO

# DESIGN §3: 2 info, 3-4 weak, 5-6 suspicious chain, 7 strong, 8 strongest (up to 10)
BANDS = (("sev7+", 7, None), ("sev5-6", 5, 6), ("sev3-4", 3, 4), ("sev1-2", None, 2))
COUNTS = ("events", "unmapped", "unreadable", "detections", *(name for name, _low, _high in BANDS))
DEFAULT_ROWS = 50
TOP_NAMES = 10


class Outcome(Protocol):
    """What the table reads of one file's result (ingest.FileResult)."""

    events: int
    unmapped: int
    error_count: int
    skipped: bool
    ingested: bool
    found: Counter[tuple[str, int]]  # detections by (name, severity)

    @property
    def where(self) -> str: ...


def band(severity: int) -> str:
    """The column a detection of this severity is counted in."""
    return next(name for name, low, high in BANDS
                if (low is None or severity >= low) and (high is None or severity <= high))


def status(r: Outcome) -> str:
    if r.skipped:
        return "skipped"  # already ingested: nothing read this time
    if not r.ingested:
        return "unread"
    return "ok" if r.error_count == 0 else "partial"


def counts(r: Outcome) -> dict[str, int]:
    out = dict.fromkeys(COUNTS, 0) | {"events": r.events, "unmapped": r.unmapped, "unreadable": r.error_count}
    for (_name, severity), n in r.found.items():
        out[band(severity)] += n
        out["detections"] += n
    return out


def needs_attention(c: dict[str, int]) -> bool:
    """A detection of severity 5 or more, or something not read."""
    return c["sev7+"] + c["sev5-6"] + c["unreadable"] > 0


def _rank(c: dict[str, int]) -> tuple[int, ...]:
    return int(needs_attention(c)), c["sev7+"], c["sev5-6"], c["unreadable"], c["detections"]


def _summed(rows: Iterable[dict[str, int]]) -> dict[str, int]:
    total = dict.fromkeys(COUNTS, 0)
    for c in rows:
        for key in COUNTS:
            total[key] += c[key]
    return total


def _files(n: int, more: str = "") -> str:
    return f"{n} {more}file" + ("" if n == 1 else "s")


Line = tuple[dict[str, int], str, str]  # counts, status, file


def table(results: Sequence[Outcome], rows: int = DEFAULT_ROWS) -> list[str]:
    """The heading and the table's lines; rows: the most files shown one by one (0: all)."""
    ranked: list[Line] = sorted(((counts(r), status(r), r.where) for r in results), key=lambda t: _rank(t[0]),
                                reverse=True)
    cut = len(ranked) if rows <= 0 else rows
    shown, rest = ranked[:cut], ranked[cut:]
    lines = list(shown)
    if rest:
        lines.append((_summed(c for c, _s, _w in rest), "-", f"({_files(len(rest), 'more ')})"))
    lines.append((_summed(c for c, _s, _w in ranked), "total", f"({_files(len(ranked))})"))
    return [_heading(len(shown), rest), *_aligned(lines)]


def _heading(shown: int, rest: list[Line]) -> str:
    heading = f"ktriage: summary: {_files(shown + len(rest))}, the most severe detections first"
    if rest:
        heading += f"; the first {shown} shown, the other {len(rest)} are summed in one row"
        hidden = sum(needs_attention(c) for c, _s, _w in rest)
        if hidden:
            heading += f" ({hidden} of them with severity >= 5 or unreadable parts: --summary-rows 0 shows all)"
    return heading


def _aligned(lines: list[Line]) -> list[str]:
    widths = {key: max(len(key), *(len(str(c[key])) for c, _s, _w in lines)) for key in COUNTS}
    status_width = max(len("status"), *(len(s) for _c, s, _w in lines))
    head = " ".join(f"{key:>{widths[key]}}" for key in COUNTS) + f" {'status':<{status_width}} file"
    body = [" ".join(f"{c[key]:>{widths[key]}}" for key in COUNTS) + f" {s:<{status_width}} {w}"
            for c, s, w in lines]
    return [head, *body]


def top_detections(results: Sequence[Outcome], limit: int = TOP_NAMES) -> list[str]:
    """The detection names found most often, with their highest severity; what is left out is counted."""
    names: Counter[str] = Counter()
    worst: dict[str, int] = {}
    for r in results:
        for (name, severity), n in r.found.items():
            names[name] += n
            worst[name] = max(severity, worst.get(name, severity))
    if not names:
        return ["ktriage: top detections: none"]
    ranked = sorted(names.items(), key=lambda item: (-item[1], item[0]))
    width = max(len("count"), len(str(ranked[0][1])))
    lines = [f"ktriage: top detections ({len(names)} names, {sum(names.values())} detections):",
             f"{'count':>{width}} sev name"]
    lines += [f"{n:>{width}} {worst[name]:>3} {name}" for name, n in ranked[:limit]]
    if len(ranked) > limit:
        left = ranked[limit:]
        lines.append(f"ktriage: ... and {len(left)} more names ({sum(n for _name, n in left)} detections)")
    return lines


def write(out: TextIO, results: Sequence[Outcome], rows: int = DEFAULT_ROWS) -> None:
    """The table and the top detections, when any file was looked at."""
    if not results:
        return
    for line in table(results, rows) + top_detections(results):
        print(line, file=out)
    out.flush()
