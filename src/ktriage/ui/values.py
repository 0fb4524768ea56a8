"""Database values as JSON can carry them, for every API reply.

JSON has no bytes and no infinite or NaN float, and PostgreSQL adds Decimal,
dates, UUIDs and more. Each such value becomes ``{"$type": T, "value": text}``:
a blob as ``{"$type": "blob", "value": "<hex>"}``, a float as
``{"$type": "float", "value": "inf" | "-inf" | "nan"}``, anything else as its
Python type name and ``str()``. Plain text never has this shape, so a marked
value cannot be mistaken for a string.
"""

from __future__ import annotations

import math
from typing import Any

_PLAIN = (str, int, type(None))  # bool is an int


def marked(kind: str, text: str) -> dict[str, str]:
    return {"$type": kind, "value": text}


def jsonable(value: Any) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else marked("float", str(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return marked("blob", bytes(value).hex())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return marked(type(value).__name__, str(value))


def size(value: Any) -> int:
    """About how many bytes a jsonable value takes in a reply (what the SQL box's byte limit counts)."""
    if isinstance(value, str):
        return len(value) + 3
    if isinstance(value, dict):
        return sum(size(k) + size(v) for k, v in value.items()) + 2
    if isinstance(value, list):
        return sum(size(v) for v in value) + 2
    return 8


def lenient_text(raw: bytes) -> str:
    """SQLite text that is not UTF-8 (CAST(x'ff' AS TEXT)) shown with U+FFFD, not refused."""
    return raw.decode("utf-8", "replace")
