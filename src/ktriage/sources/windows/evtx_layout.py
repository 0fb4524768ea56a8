"""The EVTX container, read directly: what the file header and the chunk headers
promise, so what the parser did not deliver can be reported instead of lost.

EvtxLayout (libevtx's "Windows XML Event Log (EVTX)" document): a 4096-byte file
header ("ElfFile\\0"; next record id at 24, chunk count at 42, flags at 120, a
CRC32 of its first 120 bytes at 124), then 64 KiB chunks at 4096 + n·65536,
each with a 512-byte header ("ElfChnk\\0"; first and last record id at 24 and
32, free-space offset at 48, CRC32 of the record data 512..free at 52, CRC32 of
bytes 0..120 and 128..512 at 124); the file header's oldest and current chunk
numbers (at 8 and 16) name the chunks in use. The evtx parser skips all-zero chunks and a
chunk cut short without a word; :func:`audit` compares the promises with the
record ids read and reports each shortfall with its chunk and offset.
"""

from __future__ import annotations

import bisect
import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from ktriage.sources.reading import RecordError

FILE_MAGIC = b"ElfFile\0"
CHUNK_MAGIC = b"ElfChnk\0"
HEADER_BLOCK = 4096
CHUNK = 65536
CHUNK_HEADER = 512
MAX_CHUNKS = 65535  # the parser numbers chunks with 16 bits
MAX_RECORDS_PER_CHUNK = (CHUNK - CHUNK_HEADER) // 28  # a record is at least 28 bytes
_ZEROS = bytes(CHUNK)


@dataclass(frozen=True)
class FileHeader:
    magic_ok: bool
    checksum_ok: bool
    next_record_id: int  # written lazily (flag "dirty"): a lower bound of the records written
    chunk_count: int
    head: bytes  # the first 8 bytes, for messages
    oldest_chunk: int = 0  # the chunks in use run from the oldest to the current one, wrapping
    current_chunk: int = 0

    def in_use(self, slots: int) -> set[int]:
        """Chunk numbers the header says hold records (a lower bound when it is stale)."""
        first, last = self.oldest_chunk, self.current_chunk
        if not self.magic_ok or not self.checksum_ok or max(first, last) >= slots:
            return set()
        return set(range(first, last + 1)) if first <= last else set(range(first, slots)) | set(range(last + 1))


@dataclass(frozen=True)
class Slot:
    """One 64 KiB slot of the file: a chunk, all zeros (unused), or something else."""

    index: int
    offset: int
    length: int  # bytes of it the file holds: CHUNK unless the file ends inside it
    state: str  # chunk | zero | cut (ends inside the chunk header) | garbage
    first_id: int = 0
    last_id: int = 0
    header_ok: bool = True
    data_ok: bool | None = True  # None: the record data is cut short, its checksum cannot be checked
    head: bytes = b""

    @property
    def place(self) -> str:
        return f"chunk {self.index} (offset {self.offset:#x})"


@dataclass(frozen=True)
class EvtxLayout:
    size: int
    header: FileHeader
    slots: list[Slot]
    beyond: int  # bytes past the last chunk the parser can number

    @property
    def view_size(self) -> int:
        """The size the parser is shown: the last slot completed with zeros."""
        return HEADER_BLOCK + len(self.slots) * CHUNK if self.slots else max(self.size, HEADER_BLOCK)

    @property
    def needs_view(self) -> bool:
        return not self.header.magic_ok or self.view_size != self.size


def _u32(data: bytes, offset: int) -> int:
    return struct.unpack_from("<I", data, offset)[0]


def _u64(data: bytes, offset: int) -> int:
    return struct.unpack_from("<Q", data, offset)[0]


def _file_header(block: bytes) -> FileHeader:
    magic_ok = block.startswith(FILE_MAGIC)
    if len(block) < 128:
        return FileHeader(magic_ok, False, 0, 0, block[:8])
    checksum_ok = zlib.crc32(block[:120]) == _u32(block, 124)
    return FileHeader(magic_ok, checksum_ok, _u64(block, 24), struct.unpack_from("<H", block, 42)[0], block[:8],
                      _u64(block, 8), _u64(block, 16))


def _slot(index: int, offset: int, data: bytes) -> Slot:
    length = len(data)
    if data == _ZEROS[:length]:
        return Slot(index, offset, length, "zero")
    if not data.startswith(CHUNK_MAGIC):
        cut = length < len(CHUNK_MAGIC) and CHUNK_MAGIC.startswith(data)
        return Slot(index, offset, length, "cut" if cut else "garbage", head=data[:8])
    if length < CHUNK_HEADER:
        return Slot(index, offset, length, "cut")
    free = _u32(data, 48)
    header_ok = zlib.crc32(data[128:CHUNK_HEADER], zlib.crc32(data[:120])) == _u32(data, 124)
    if free > length:
        data_ok = None if free <= CHUNK else False
    else:
        data_ok = free >= CHUNK_HEADER and zlib.crc32(data[CHUNK_HEADER:free]) == _u32(data, 52)
    return Slot(index, offset, length, "chunk", _u64(data, 24), _u64(data, 32), header_ok, data_ok)


def scan(f: BinaryIO, size: int) -> EvtxLayout:
    """The file's header and every chunk slot (one sequential read of the file)."""
    f.seek(0)
    header = _file_header(f.read(HEADER_BLOCK))
    slots: list[Slot] = []
    offset = HEADER_BLOCK
    while offset < size and len(slots) < MAX_CHUNKS:
        slots.append(_slot(len(slots), offset, f.read(CHUNK)))
        offset += CHUNK
    return EvtxLayout(size, header, slots, max(0, size - offset))


def has_chunks(layout: EvtxLayout) -> bool:
    return any(s.state == "chunk" for s in layout.slots)


class View(io.RawIOBase):
    """The file as the parser should see it: a damaged header magic restored and
    the last chunk completed with zeros, so records before a cut are read."""

    def __init__(self, f: BinaryIO, layout: EvtxLayout) -> None:
        self.f, self.size, self.real = f, layout.view_size, min(layout.size, layout.view_size)
        self.patch = b"" if layout.header.magic_ok else FILE_MAGIC
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        want = max(0, min(len(buffer), self.size - self.pos))
        data = b""
        if self.pos < self.real:
            self.f.seek(self.pos)
            data = self.f.read(min(want, self.real - self.pos))
        data += bytes(want - len(data))
        if self.pos < len(self.patch):
            data = self.patch[self.pos:self.pos + len(data)] + data[len(self.patch) - self.pos:]
        buffer[:want] = data[:want]
        self.pos += want
        return want


# -- what was promised and not read ---------------------------------------------------

def _count(ids: list[int], first: int, last: int) -> int:
    return bisect.bisect_right(ids, last) - bisect.bisect_left(ids, first)


def _chunk_problems(slot: Slot, ids: list[int]) -> list[str]:
    problems = []
    promised = slot.last_id - slot.first_id + 1
    if not 0 <= promised <= MAX_RECORDS_PER_CHUNK:
        problems.append(f"its header promises records {slot.first_id}-{slot.last_id}, not a possible range")
    else:
        read = _count(ids, slot.first_id, slot.last_id)
        if read < promised:
            problems.append(f"{read} of the {promised} records it holds (ids {slot.first_id}-{slot.last_id}) read")
    if slot.length < CHUNK:
        problems.append(f"the file ends {slot.length} bytes into it")
    if not slot.header_ok:
        problems.append("its header fails its checksum")
    if slot.data_ok is False:
        problems.append("its record data fails its checksum (damaged)")
    return problems


def _holes(chunks: list[Slot], where: str) -> Iterator[RecordError]:
    """Record ids no readable chunk holds, between two that are (a zeroed or unreadable chunk)."""
    ranges = sorted((s.first_id, s.last_id, s.index) for s in chunks if s.first_id <= s.last_id)
    for (_, last, a), (first, _, b) in zip(ranges, ranges[1:]):
        if first > last + 1:
            yield RecordError(where, f"records {last + 1}-{first - 1} are in no readable chunk "
                                     f"(they fall between chunk {a} and chunk {b})")


def _header_problems(layout: EvtxLayout, ids: list[int], chunks: list[Slot]) -> list[str]:
    header = layout.header
    if not header.magic_ok:
        return [f"no EVTX file header (it starts {header.head.hex()}, not ElfFile): its chunks were read anyway"]
    if not header.checksum_ok:
        return ["the file header fails its checksum: what it promises is not trusted"]
    promised_last = header.next_record_id - 1
    covered = max([ids[-1] if ids else 0] + [s.last_id for s in chunks if s.first_id <= s.last_id])
    if promised_last > covered:
        return [f"it promises records up to {promised_last} in {header.chunk_count} chunks; records "
                f"{covered + 1}-{promised_last} are in no readable chunk ({len(chunks)} chunks are readable)"]
    return []


def audit(layout: EvtxLayout, ids: list[int], reported: set[int], where: str) -> Iterator[RecordError]:
    """Every promise of the headers the records read (ids, sorted) do not meet; chunks
    the parser already reported (reported: chunk numbers) are not reported again."""
    chunks = [s for s in layout.slots if s.state == "chunk"]
    in_use = layout.header.in_use(len(layout.slots))
    for slot in layout.slots:
        if slot.state == "zero" and slot.index in in_use:
            problems = ["all zeros, though the file header says it holds records: they are lost"]
        elif slot.state == "chunk":
            problems = _chunk_problems(slot, ids)
        elif slot.state == "cut":
            problems = [f"the file ends {slot.length} bytes into it, inside its header: its records are lost"]
        elif slot.state == "garbage" and slot.index not in reported:
            problems = [f"no chunk header (it starts {slot.head.hex()}): its records cannot be read"]
        else:
            continue
        if problems:
            yield RecordError(f"{where} {slot.place}", "; ".join(problems))
    yield from _holes(chunks, where)
    for problem in _header_problems(layout, ids, chunks):
        yield RecordError(f"{where} file header", problem)
    if layout.beyond:
        yield RecordError(where, f"{layout.beyond} bytes past chunk {MAX_CHUNKS - 1}, the last an EVTX file "
                                 "can number: not read")
