"""A progress bar for a long batch on a terminal (``ktriage ingest``): one line on
stderr, redrawn in place.

It is fed only with deltas of plain counters (:meth:`Progress.update`), so a
parent process that merges the results of parallel workers feeds it exactly as a
serial loop does. An update adds and reads the clock; the line is drawn from the
counters at most once every ``MIN_INTERVAL_S``, so updating per record or per
file costs the ingest nothing measurable. Disabled (stderr is not a terminal) it
still counts and never writes a byte.

The current file name is given already escaped (``sources.reading.printable``);
the line is cut to the terminal's width in columns (wide characters count two)
so a drawing never wraps, which would break the redraw in place.
"""

from __future__ import annotations

import os
import time
import unicodedata
from typing import TextIO

MIN_INTERVAL_S = 0.1
CLEAR = "\r\x1b[K"  # back to the start of the line, erase it
BAR_CELLS = 20
NAME_MIN_CELLS = 8  # below this the name is left out rather than cut to nothing
FALLBACK_COLUMNS = 80


def cells(text: str) -> int:
    """Terminal columns text takes: wide characters two, combining ones none."""
    return sum(_char_cells(c) for c in text)


def _char_cells(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in "WF" else 1


def fit(text: str, width: int) -> str:
    """text cut to at most width columns, ending in "..." when cut."""
    if cells(text) <= width:
        return text
    out, used = [], 0
    for char in text:
        used += _char_cells(char)
        if used > width - 3:
            break
        out.append(char)
    return "".join(out) + "..."


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class Progress:
    """Counters of a batch and, when enabled, their bar on out."""

    def __init__(self, out: TextIO, enabled: bool) -> None:
        self.out = out
        self.enabled = enabled
        self.total = 0
        self.files = self.events = self.detections = self.severe = self.errors = 0
        self.current = ""
        self.started = self.drawn_at = time.monotonic()
        self.shown = False  # a drawing is on the line now

    def start(self, total_files: int) -> None:
        self.total = total_files
        self.started = time.monotonic()
        self.drawn_at = self.started - MIN_INTERVAL_S  # the first update draws

    def update(self, files_done: int = 0, events: int = 0, detections: int = 0, severe: int = 0, errors: int = 0,
               current: str | None = None) -> None:
        """Add these deltas (severe: detections of severity 5 or more); redraw if one is due."""
        self.files += files_done
        self.events += events
        self.detections += detections
        self.severe += severe
        self.errors += errors
        if current is not None:
            self.current = current
        if self.enabled:
            self.refresh()

    def refresh(self) -> None:
        """Redraw if the last drawing is MIN_INTERVAL_S old (for a loop that waits without news)."""
        now = time.monotonic()
        if self.enabled and now - self.drawn_at >= MIN_INTERVAL_S:
            self.drawn_at = now
            self.out.write("\r" + self.line(self._columns() - 1, now - self.started) + "\x1b[K")
            self.out.flush()
            self.shown = True

    def clear(self) -> None:
        """Take the bar off its line, before anything else is written to out (the next update redraws it)."""
        if self.shown:
            self.out.write(CLEAR)
            self.out.flush()
            self.shown = False

    def finish(self) -> None:
        self.clear()

    def line(self, width: int, elapsed: float) -> str:
        """The bar's text in at most width columns."""
        rate = self.events / elapsed if elapsed > 0 else 0.0
        head = f"[{self.files:>{len(str(self.total))}}/{self.total} files]"
        counts = (f" {self.events:,} events {rate:,.0f}/s  {self.detections:,} detections "
                  f"({self.severe:,} sev>=5)")
        if self.errors:
            counts += f"  {self.errors:,} unreadable"
        counts += f"  {clock(elapsed)}"
        room = width - cells(head) - cells(counts)
        bar = ""
        if room >= BAR_CELLS + 3 + NAME_MIN_CELLS:
            bar = " " + self._bar()
            room -= BAR_CELLS + 3
        name = "  " + fit(self.current, room - 2) if self.current and room - 2 >= NAME_MIN_CELLS else ""
        return fit(head + bar + counts + name, width)

    def _bar(self) -> str:
        done = BAR_CELLS * self.files // self.total if self.total else 0
        return "[" + "=" * done + " " * (BAR_CELLS - done) + "]"

    def _columns(self) -> int:
        try:
            return os.get_terminal_size(self.out.fileno()).columns or FALLBACK_COLUMNS
        except (OSError, ValueError):  # not a terminal (progress forced on), or closed
            return FALLBACK_COLUMNS
