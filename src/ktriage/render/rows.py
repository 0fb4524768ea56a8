"""Render query result rows as an aligned table, JSON lines or CSV (stdout)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

FORMATS = ("table", "jsonl", "csv")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def write_rows(out: TextIO, fmt: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Write rows in the given format; returns how many were written."""
    if fmt == "jsonl":
        return _jsonl(out, columns, rows)
    if fmt == "csv":
        return _csv(out, columns, rows)
    return _table(out, columns, rows)


def _jsonl(out: TextIO, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    n = 0
    for row in rows:
        record = {c: (v.hex() if isinstance(v, bytes) else v) for c, v in zip(columns, row)}
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        n += 1
    return n


def _csv(out: TextIO, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    writer = csv.writer(out)
    writer.writerow(columns)
    n = 0
    for row in rows:
        writer.writerow([_cell(v) for v in row])
        n += 1
    return n


def _table(out: TextIO, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for r in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")
    return len(cells)
