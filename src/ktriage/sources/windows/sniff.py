"""What a file is, from its first bytes: an event log ingest reads, or what it is instead.

The content decides, not the name: a PDF named ``x.evtx`` is refused as a PDF,
an EVTX whose header magic is damaged is still an EVTX when its name says so
and a chunk follows. JSON is recognised by its first non-blank byte, or by a
.json/.jsonl name on text (whose lines are then reported one by one).
"""

from __future__ import annotations

from ktriage.sources.windows.evtx_layout import CHUNK_MAGIC, FILE_MAGIC, HEADER_BLOCK

HEAD = HEADER_BLOCK + len(CHUNK_MAGIC)  # enough to see a chunk after a damaged header
EVTX, ZIP, TAR, JSON = "evtx", "zip", "tar", "json"
LOG_SUFFIXES = (".evtx", ".json", ".jsonl")
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")
EXPECTED = "EVTX, JSON, zip or tar.gz expected"

_OTHER = ((b"%PDF", "a PDF document"), (b"\x7fELF", "an ELF executable"), (b"MZ", "a Windows executable"),
          (b"SQLite format 3\0", "a SQLite database"), (b"Rar!", "a RAR archive (not read: unpack it first)"),
          (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive (not read: unpack it first)"),
          (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"<?xml", "XML (export JSON or EVTX)"),
          (b"\xd0\xcf\x11\xe0", "an OLE document (Office)"), (b"ElfChnk\0", "an EVTX chunk without its file header"))
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\0")


def _is_text(head: bytes) -> bool:
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut by the end of the sample
    return True


def _first_visible(head: bytes) -> bytes:
    return head.removeprefix(b"\xef\xbb\xbf").lstrip()[:1]


def kind(head: bytes, name: str) -> str | None:
    """evtx | zip | tar | json for a file ingest reads, None otherwise."""
    lower = name.lower()
    if head.startswith(FILE_MAGIC):
        return EVTX
    if lower.endswith(".evtx") and head[HEADER_BLOCK:HEAD] == CHUNK_MAGIC:
        return EVTX  # the file header is damaged, the chunks may not be
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return ZIP
    if head.startswith(_COMPRESSED) or head[257:262] == b"ustar":
        return TAR
    if _first_visible(head) in (b"{", b"["):
        return JSON
    if lower.endswith((".json", ".jsonl")) and head.strip() and _is_text(head):
        return JSON
    return None


def describe(head: bytes) -> str:
    """What a file that is not an event log is, in words."""
    if not head:
        return "an empty file"
    for magic, what in _OTHER:
        if head.startswith(magic):
            return what
    if not head.strip(b"\0"):
        return "all zero bytes"
    if _is_text(head):
        return "text, not JSON" if head.strip() else "only blank space"
    return f"binary data (it starts {head[:8].hex()})"


def refusal(head: bytes, name: str, what: str = "event log") -> str:
    """The one-line reason a file is not read."""
    expected = {"event log": EXPECTED, "EVTX file": "it does not start with ElfFile"}.get(what, EXPECTED)
    return f"not an {what}: {describe(head)} ({expected})"
