"""JSON event files: JSON lines (OTRF, Winlogbeat, evtx-rs ``-o jsonl``) or one
document (an evtx-rs dump, several concatenated, or an array of records).

The file is JSON lines when its first non-blank line is JSON on its own (a line
may start with spaces); otherwise it is read as documents when its first value
decodes, and as lines again when even that fails, so one damaged first line
does not lose the rest. Every line that is not a JSON object is a located error
(``file:line``); lines and documents are bounded in size and nesting.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson

from ktriage.sources.reading import ReadLimits, Record, RecordError
from ktriage.sources.windows.shapes import Malformed, json_record, kind

_BOM = b"\xef\xbb\xbf"


class NotJson(ValueError):
    """Text that does not decode as a JSON value within the bounds."""


# digits -> "1", brackets -> "{", the rest -> " ": one pass finds long numbers and bounds the nesting
_SHAPE = bytes(0x31 if 0x30 <= i <= 0x39 else 0x7B if i in (0x7B, 0x5B) else 0x20 for i in range(256))
_LONG = b"1" * 19  # orjson makes integers beyond 64 bits floats: text with such a number goes to json
_BEFORE_NUMBER = frozenset(b":,[ \t\r\n-")
_AFTER_NUMBER = frozenset(b",]} \t\r\n.eE")


_INT_MIN, _INT_END = -(1 << 63), 1 << 64  # the integers orjson keeps exact (signed or unsigned 64 bits)
_FRACTION = frozenset(b".eE")


def _long_number(data: bytes, shape: bytes) -> bool:
    """Whether data has a number of 19 digits or more that orjson would not keep exact: an
    integer beyond 64 bits, or such digits in a float (runs inside strings, as in hashes, mostly
    are not numbers). A 64-bit one such as the OTRF sets' Keywords (-9223372036854775808) is kept."""
    at, size = shape.find(_LONG), len(shape)
    while at >= 0:
        end = at + len(_LONG)
        while end < size and shape[end] == 0x31:
            end += 1
        before = data[at - 1] if at else 0x20
        after = data[end] if end < len(data) else 0x20
        if before in _BEFORE_NUMBER and after in _AFTER_NUMBER and (after in _FRACTION or not _fits(data, at, end)):
            return True
        at = shape.find(_LONG, end)
    return False


def _fits(data: bytes, start: int, end: int) -> bool:
    """Whether the digits data[start:end] (after a minus sign or not) are a 64-bit integer."""
    if end - start > 20:
        return False
    value = int(data[start:end])
    return _INT_MIN <= (-value if start and data[start - 1] == 0x2D else value) < _INT_END


def decode(data: bytes | str, nesting: int, exact: bool = True) -> Any:
    """One JSON value at orjson's speed; what orjson refuses (lone surrogates, NaN,
    invalid UTF-8) or would round (exact: integers beyond 64 bits, which it makes
    floats) goes to json, and its strings are made encodable. Raises NotJson, also
    for values nested deeper than nesting. The evtx parser's JSON needs no exact:
    its numbers come from binary types of at most 64 bits."""
    if exact:
        raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
        shape = raw.translate(_SHAPE)
        if _long_number(raw, shape):
            return _decode_slowly(data, nesting)
        opens = shape.count(b"{")
    else:
        opens = data.count(b"{") + data.count(b"[") if isinstance(data, bytes) else data.count("{") + data.count("[")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _decode_slowly(data, nesting)
    if opens > nesting and _deeper_than(value, nesting):  # a value cannot nest deeper than it has brackets
        raise NotJson(f"nested deeper than {nesting} levels")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((v, depth + 1) for v in children if isinstance(v, (dict, list)))
    return False


def _decode_slowly(data: bytes | str, nesting: int) -> Any:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    try:
        value = json.loads(text, parse_constant=str)  # NaN and Infinity stay text
    except RecursionError:
        raise NotJson(f"nested deeper than {nesting} levels") from None
    except json.JSONDecodeError as exc:
        raise NotJson(f"not JSON: {exc.msg} (column {exc.colno})") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise NotJson(f"not JSON: {exc}") from None
    return _checked(value, nesting)


def _checked(value: Any, nesting: int) -> Any:
    if isinstance(value, (dict, list)) and _deeper_than(value, nesting):
        raise NotJson(f"nested deeper than {nesting} levels")
    return _encodable(value)


def encodable_text(text: str) -> str:
    """text with lone surrogates (valid in JSON escapes, not in UTF-8) kept as their escapes."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _encodable(value: Any) -> Any:
    if isinstance(value, str):
        return encodable_text(value)
    if isinstance(value, dict):
        return {encodable_text(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    return value


# -- values → records -------------------------------------------------------------

def _records(value: Any, where: str, n: int) -> Iterator[Record | RecordError]:
    """The records of one decoded value on line n of where: an object, or an array of them."""
    if isinstance(value, dict):
        yield _record(value, where, n)
    elif isinstance(value, list) and not value:
        yield RecordError(f"{where}:{n}", "an empty list, not an object (an event)")
    elif isinstance(value, list):  # an array of records
        for i, item in enumerate(value):
            if isinstance(item, dict):
                yield _record(item, where, n, f" item {i}")
            else:
                yield RecordError(f"{where}:{n} item {i}", f"{kind(item)}, not an object (an event)")
    else:
        yield RecordError(f"{where}:{n}", f"{kind(value)}, not an object (an event)")


def _record(obj: dict[str, Any], where: str, n: int, item: str = "") -> Record | RecordError:
    """where and n (its line) name the record in an error; item, its place in an array."""
    try:
        return json_record(obj, n)
    except Malformed as exc:
        return RecordError(f"{where}:{n}{item}", f"malformed record: {exc}")


# -- lines ---------------------------------------------------------------------------

def _split_lines(stream: BinaryIO, bound: int) -> Iterator[bytes | None]:
    """The lines of stream without their newline, read in blocks; None for a line
    longer than bound (never held whole)."""
    carry, too_long = b"", False
    while True:
        block = stream.read(1 << 20)
        if not block:
            if too_long or carry:
                yield None if too_long else carry
            return
        parts = block.split(b"\n")
        if len(parts) > 1:
            line = carry + parts[0]
            yield None if too_long or len(line) > bound else line
            too_long, carry = False, parts.pop()
            for line in parts[1:]:
                yield line if len(line) <= bound else None
        elif not too_long:
            carry += block
        if len(carry) > bound:
            too_long, carry = True, b""


def _lines(stream: BinaryIO, where: str, limits: ReadLimits, first: int = 1) -> Iterator[Record | RecordError]:
    n, nesting = first - 1, limits.nesting
    for line in _split_lines(stream, limits.line_bytes):
        n += 1
        if line is None:
            yield RecordError(f"{where}:{n}", f"a line longer than {limits.line_bytes} bytes: not read")
            continue
        if not line or line.isspace():
            continue
        try:
            value = decode(line, nesting)
        except NotJson as exc:
            yield RecordError(f"{where}:{n}", str(exc))
            continue
        if type(value) is dict:
            yield _record(value, where, n)
        else:
            yield from _records(value, where, n)


# -- documents ---------------------------------------------------------------------

_SPACE = re.compile(r"\s*")


def _next_document(text: str, pos: int, nesting: int) -> tuple[Any, int]:
    """The JSON value at pos and where it ends; raises NotJson."""
    try:
        value, end = json.JSONDecoder(parse_constant=str).raw_decode(text, pos)
    except RecursionError:
        raise NotJson(f"nested deeper than {nesting} levels") from None
    except json.JSONDecodeError as exc:
        raise NotJson(f"not JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:
        raise NotJson(f"not JSON: {exc}") from None
    return _checked(value, nesting), end


def _documents(text: str, where: str, nesting: int) -> Iterator[Record | RecordError] | None:
    """Pretty-printed JSON documents, one after another, or None unless the first
    decodes and spans more than its first line. After one that does not decode,
    reading resumes at the next line that starts a document (``{`` in column 1)."""
    pos = _SPACE.match(text).end()
    try:
        first = _next_document(text, pos, nesting)
    except NotJson:
        return None
    if "\n" not in text[pos:first[1]]:
        return None
    return _more_documents(text, where, 1 + text.count("\n", 0, pos), pos, first, nesting)


def _more_documents(text: str, where: str, line: int, start: int, first: tuple[Any, int] | NotJson,
                    nesting: int) -> Iterator[Record | RecordError]:
    """line: the line of the document at start; first: it decoded, or why not."""
    result = first
    while True:
        if isinstance(result, NotJson):
            resume = text.find("\n{", start)
            end = len(text) if resume < 0 else resume + 1
            last = line + text.count("\n", start, end) - (0 if resume < 0 else 1)
            yield RecordError(f"{where}:{line}", f"{result}; lines {line}-{last} not read")
        else:
            value, end = result
            yield from _records(value, where, line)
        pos = _SPACE.match(text, end).end()
        if pos == len(text):
            return
        line += text.count("\n", start, pos)
        start = pos
        try:
            result = _next_document(text, pos, nesting)
        except NotJson as exc:
            result = exc


class _Prefixed(io.RawIOBase):
    """Bytes already read, then the rest of the stream."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head, self.stream = io.BytesIO(head), stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.head.readinto(buffer)
        return n if n else self.stream.readinto(buffer)


def joined(head: bytes, stream: BinaryIO) -> BinaryIO:
    return io.BufferedReader(_Prefixed(head, stream), 1 << 20)


def json_records(stream: BinaryIO, where: str, limits: ReadLimits = ReadLimits()) -> Iterator[Record | RecordError]:
    """Records and located errors of a JSON event file or archive member (see the module doc)."""
    first = stream.readline(limits.line_bytes + 1)
    blank = 0
    while first and first.isspace():
        blank += 1
        first = stream.readline(limits.line_bytes + 1)
    if not first:
        yield RecordError(where, "no JSON in it: only blank lines" if blank else "no JSON in it: the file is empty")
        return
    if blank == 0 and first.startswith(_BOM):
        first = first[len(_BOM):]
    if first.endswith(b"\n") and _decodes(first, limits.nesting):
        yield from _lines(joined(first, stream), where, limits, blank + 1)  # JSON lines
        return
    head = b"\n" * blank + first + stream.read(limits.document_bytes - len(first) + 1)
    if len(head) <= limits.document_bytes + blank:
        documents = _documents(head.decode("utf-8", "replace"), where, limits.nesting)
        if documents is not None:
            yield from documents
            return
    yield from _lines(joined(head[blank:], stream), where, limits, blank + 1)


def _decodes(line: bytes, nesting: int) -> bool:
    try:
        decode(line, nesting)
    except NotJson:
        return False
    return True
