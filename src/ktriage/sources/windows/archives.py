"""Zip and tar archives of event logs, read member by member within ReadLimits.

Nothing is extracted by name: JSON members are streamed, an EVTX member (the
parser needs to seek) is copied, bounded, to a file of ktriage's own naming in
a private temporary directory and removed when read. Each member is bounded in
uncompressed size and in ratio to its compressed size, the archive in total
size and member count; past a bound the rest is reported, not read. Encrypted
members, links, devices and FIFOs are refused, each a located error; an
archive inside an archive is reported, not opened; other members are skipped
and counted. A damaged archive yields what it holds before the damage.
"""

from __future__ import annotations

import io
import lzma
import os
import shutil
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ktriage.sources.reading import BoundExceeded, ReadLimits, Record, RecordError, Skipped, printable
from ktriage.sources.windows import sniff
from ktriage.sources.windows.evtx_file import evtx_records
from ktriage.sources.windows.jsonfile import joined, json_records

Item = Record | RecordError | Skipped
# what zipfile, tarfile and their decompressors raise on damaged input
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, struct.error,
              NotImplementedError, RuntimeError, zlib.error, lzma.LZMAError)
TAR_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError, struct.error, zlib.error, lzma.LZMAError)


class _Bounded(io.RawIOBase):
    """A member's stream that raises BoundExceeded past limit bytes (or when check says so)."""

    def __init__(self, stream: BinaryIO, limit: int, reason: str, check: Callable[[int], None] | None = None) -> None:
        self.stream, self.limit, self.reason, self.check = stream, limit, reason, check
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.stream.readinto(buffer)
        self.count += n
        if self.count > self.limit:
            raise BoundExceeded(f"more than {self.limit} bytes uncompressed, over {self.reason}: the rest not read")
        if self.check is not None:
            self.check(self.count)
        return n


class _Counting(io.RawIOBase):
    """The compressed file, counting what the decompressor took from it."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.count = f, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.f.readinto(buffer)
        self.count += n
        return n


class _Archive:
    """State shared by the members of one archive: bounds used, the staging directory."""

    def __init__(self, path: Path, limits: ReadLimits, staging: str) -> None:
        self.path, self.limits, self.staging = path, limits, Path(staging)
        self.name = printable(str(path))
        self.size = path.stat().st_size
        self.used = 0  # uncompressed bytes read so far
        self.members = 0
        self.logs = 0  # records and errors from members: not an archive without logs

    def nothing_read(self) -> RecordError | None:
        """An archive without an event log in it is an error, not an empty ingest."""
        if self.logs:
            return None
        what = "it is empty" if not self.members else f"none of its {self.members} members is one"
        return RecordError(self.name, f"no event log in the archive: {what}")

    def where(self, name: str) -> str:
        return f"{self.name}!{printable(name)}"

    def bound(self, compressed: int | None) -> tuple[int, str]:
        """How many bytes the next member may give, and which bound that is."""
        limits = self.limits
        bounds = [(limits.member_bytes, f"the {limits.member_bytes}-byte bound for one member"),
                  (limits.archive_bytes - self.used, f"the {limits.archive_bytes}-byte bound for one archive")]
        if compressed is not None:
            bounds.append((max(limits.ratio_floor, limits.ratio * compressed),
                           f"{limits.ratio} times its compressed size (a decompression bomb?)"))
        return min(bounds)

    def counted(self, items: Iterator[Item]) -> Iterator[Item]:
        for item in items:
            self.logs += not isinstance(item, Skipped)
            yield item

    def too_many(self) -> RecordError | None:
        self.members += 1
        if self.members > self.limits.members:
            return RecordError(self.name, f"more than {self.limits.members} members: the rest not read")
        return None

    def member(self, stream: BinaryIO, name: str, bounded: _Bounded) -> Iterator[Item]:
        """One regular member: read as a log, refused, or skipped, by what it holds."""
        where = self.where(name)
        try:
            head = stream.read(sniff.HEAD)
            found, lower = sniff.kind(head, name), name.lower()
            if found == sniff.EVTX:
                yield from self._evtx(head, stream, where)
            elif found in (sniff.ZIP, sniff.TAR) or lower.endswith(sniff.ARCHIVE_SUFFIXES):
                yield RecordError(where, "an archive inside an archive: not opened (unpack it first)")
            elif found == sniff.JSON and lower.endswith((".json", ".jsonl")):
                yield from json_records(joined(head, stream), where, self.limits)
            elif lower.endswith(sniff.LOG_SUFFIXES):
                yield RecordError(where, sniff.refusal(head, name))
            else:
                yield Skipped(where, f"not an event log: {sniff.describe(head)}")
        except BoundExceeded as exc:
            yield RecordError(where, str(exc))
        finally:
            self.used += bounded.count

    def _evtx(self, head: bytes, stream: BinaryIO, where: str) -> Iterator[Item]:
        staged = self.staging / f"member-{self.members}.evtx"
        try:
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(head)
                try:
                    shutil.copyfileobj(stream, out, 1 << 20)
                except BoundExceeded as exc:  # what was copied is still read: a truncated EVTX
                    yield RecordError(where, str(exc))
        except OSError as exc:
            yield RecordError(where, f"cannot stage it in {self.staging}: {exc.strerror or exc}")
            staged.unlink(missing_ok=True)
            return
        try:
            yield from evtx_records(staged, where)
        finally:
            staged.unlink(missing_ok=True)


# -- zip -----------------------------------------------------------------------------------

def _zip_member(archive: _Archive, z: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[Item]:
    where = archive.where(info.filename)
    if info.flag_bits & 0x1:
        yield RecordError(where, "encrypted: not read (ingest has no password)")
        return
    limit, reason = archive.bound(info.compress_size)
    if info.file_size > limit:
        yield RecordError(where, f"declares {info.file_size} bytes uncompressed, over {reason}: not read")
        return
    try:
        with z.open(info) as raw:
            bounded = _Bounded(raw, limit, reason)
            yield from archive.member(io.BufferedReader(bounded, 1 << 20), info.filename, bounded)
    except ZIP_ERRORS as exc:
        yield RecordError(where, f"damaged member: {printable(str(exc))}")


def zip_records(path: Path, limits: ReadLimits = ReadLimits()) -> Iterator[Item]:
    try:
        z = zipfile.ZipFile(path)
    except ZIP_ERRORS as exc:
        yield RecordError(printable(str(path)), f"not a readable zip archive: {printable(str(exc))}")
        return
    with z, tempfile.TemporaryDirectory(prefix="ktriage-ingest-") as staging:
        archive = _Archive(path, limits, staging)
        for info in z.infolist():
            if info.is_dir():
                continue
            too_many = archive.too_many()
            if too_many is not None:
                yield too_many
                return
            yield from archive.counted(_zip_member(archive, z, info))
        nothing = archive.nothing_read()
        if nothing is not None:
            yield nothing


# -- tar ------------------------------------------------------------------------------------

_REFUSED = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a character device",
            tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a FIFO"}


def _tar_refusal(member: tarfile.TarInfo) -> str | None:
    what = _REFUSED.get(member.type)
    if what is not None:
        target = f" to {printable(member.linkname)}" if member.issym() or member.islnk() else ""
        return f"{what}{target}: refused (only regular files are read)"
    if not member.isreg():
        return f"a member of tar type {member.type!r}: refused (only regular files are read)"
    return None


class _TarStream:
    """The ratio bound over a tar stream: uncompressed position vs compressed bytes taken."""

    def __init__(self, archive: _Archive, counting: _Counting) -> None:
        self.archive, self.counting = archive, counting

    def over_ratio(self, uncompressed: int, compressed: int) -> bool:
        limits = self.archive.limits
        return uncompressed > limits.ratio_floor and uncompressed > limits.ratio * max(compressed, 1)

    def check(self, member: tarfile.TarInfo) -> Callable[[int], None]:
        def check(read: int) -> None:
            if self.over_ratio(member.offset_data + read, self.counting.count):
                raise BoundExceeded(f"the tar stream grew past {self.archive.limits.ratio} times its compressed "
                                    "size (a decompression bomb?): the rest not read")
        return check

    def stop(self, member: tarfile.TarInfo) -> str | None:
        """Why no member from this one on is read, if one of the bounds will be crossed."""
        end, limits = member.offset_data + member.size, self.archive.limits
        if end > limits.archive_bytes:
            return f"the archive would exceed the {limits.archive_bytes}-byte bound for one archive"
        if self.over_ratio(end, self.archive.size):
            return f"the archive would exceed {limits.ratio} times its compressed size (a decompression bomb?)"
        return None


def _tar_member(archive: _Archive, stream: _TarStream, t: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[Item]:
    where = archive.where(member.name)
    refusal = _tar_refusal(member)
    if refusal is not None:
        yield RecordError(where, refusal)
        return
    limit, reason = archive.bound(None)
    if member.size > limit:
        yield RecordError(where, f"declares {member.size} bytes, over {reason}: not read")
        return
    raw = t.extractfile(member)
    if raw is None:
        return
    bounded = _Bounded(raw, limit, reason, stream.check(member))
    yield from archive.member(io.BufferedReader(bounded, 1 << 20), member.name, bounded)


class _Damaged(Exception):
    """A tar stream that cannot go on past a damaged member."""


def _tar_members(archive: _Archive, t: tarfile.TarFile, stream: _TarStream) -> Iterator[Item]:
    for member in t:
        if member.isdir():
            continue
        too_many, stop = archive.too_many(), stream.stop(member)
        if too_many is not None or stop is not None:
            yield too_many or RecordError(archive.where(member.name), f"{stop}: it and the members after it not read")
            return
        try:
            yield from archive.counted(_tar_member(archive, stream, t, member))
        except TAR_ERRORS as exc:
            yield RecordError(archive.where(member.name), f"damaged: {printable(str(exc))}; the rest not read")
            raise _Damaged from exc


_TRAILER = 1 << 20  # tar pads its end with zeros; a header damaged mid-archive is followed by data


def _trailing(t: tarfile.TarFile, archive: _Archive) -> RecordError | None:
    """tarfile ends quietly at a damaged header: data past the end that is not zeros is reported."""
    block = t.fileobj.read(_TRAILER)
    if block.count(0) != len(block):
        return RecordError(f"{archive.name} at uncompressed offset {t.offset:#x}",
                           "data after the last readable member that is not a tar header (damaged): not read")
    return None


def tar_records(path: Path, limits: ReadLimits = ReadLimits()) -> Iterator[Item]:
    with open(path, "rb") as f, tempfile.TemporaryDirectory(prefix="ktriage-ingest-") as staging:
        archive, counting = _Archive(path, limits, staging), _Counting(f)
        stream = _TarStream(archive, counting)
        try:
            t = tarfile.open(fileobj=io.BufferedReader(counting), mode="r|*")
        except TAR_ERRORS as exc:
            yield RecordError(archive.name, f"not a readable tar archive: {printable(str(exc))}")
            return
        with t:
            try:
                yield from _tar_members(archive, t, stream)
                trailing = _trailing(t, archive)
            except _Damaged:
                return
            except TAR_ERRORS as exc:
                trailing = RecordError(f"{archive.name} at uncompressed offset {t.offset:#x}",
                                       f"damaged: {printable(str(exc))}; the rest not read")
            if trailing is not None:
                yield trailing
            nothing = archive.nothing_read()
            if nothing is not None:
                yield nothing
