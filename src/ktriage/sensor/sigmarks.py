"""Signal marks: what the kernel kept of the signals sent to ktriage's processes.

The sensor's ``signal_generate`` program (bpf/tamper.bpf.h) writes one mark per (target tgid,
signal) into a map pinned on bpffs, in the sender's context, when the signal is generated. The
map outlives the sensor, so a SIGKILL leaves its sender behind; the watchdog reads it to name
who stopped the sensor while the sensor cannot run. Marks carry CLOCK_BOOTTIME: bpffs does not
survive a reboot, and neither does that clock's origin.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal as signal_mod
import time
from dataclasses import dataclass
from pathlib import Path

from ktriage.errors import BpfError, SetupError
from ktriage.sensor import layouts
from ktriage.sensor.libbpf import fdinfo, lookup_fd, open_pinned

log = logging.getLogger(__name__)

BPFFS = Path("/sys/fs/bpf")
PIN_DIR = BPFFS / "ktriage"
PIN_NAME = "kt_sigmarks_v1"  # versioned: a changed layout is a new map, never a refused reuse
STOP_SIGNALS = frozenset({signal_mod.SIGSTOP, signal_mod.SIGTSTP, signal_mod.SIGTTIN, signal_mod.SIGTTOU})
_NAMES = [f.name for f in layouts.SIGMARK]
BPF_FS_MAGIC = 0xCAFE4A11  # statfs f_type of bpffs
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class SignalMark:
    target: int  # the ktriage process signalled (tgid)
    sig: int
    ts_boot: int  # CLOCK_BOOTTIME ns when it was generated
    sender: int  # tgid
    sender_tid: int
    code: int
    comm: str
    exe: str

    @property
    def name(self) -> str:
        try:
            return signal_mod.Signals(self.sig).name
        except ValueError:
            return f"SIG{self.sig}"

    @property
    def from_kernel(self) -> bool:
        return self.code == 0x80  # SI_KERNEL: the OOM killer, a tty's job control …

    def who(self) -> str:
        return f"pid {self.sender} ({self.exe or self.comm or '?'})"


def pin_path() -> str:
    return str(PIN_DIR / PIN_NAME)


def _is_bpffs(path: Path) -> bool:
    buf = ctypes.create_string_buffer(128)  # struct statfs: f_type is its first word
    if _libc.statfs(str(path).encode(), buf) != 0:
        return False
    return int.from_bytes(buf.raw[:8], "little") & 0xFFFFFFFF == BPF_FS_MAGIC


def ensure_pin_dir() -> Path:
    """bpffs mounted at /sys/fs/bpf (mounted if missing) and ktriage's root-only folder in it."""
    if not _is_bpffs(BPFFS):
        if _libc.mount(b"bpf", str(BPFFS).encode(), b"bpf", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, b"mode=0700") != 0:
            err = ctypes.get_errno()
            raise SetupError(f"cannot mount bpffs on {BPFFS}: {os.strerror(err)}")
        log.info("mounted bpffs on %s", BPFFS)
    PIN_DIR.mkdir(mode=0o700, exist_ok=True)
    return PIN_DIR


class MarkReader:
    """Reads the pinned marks (its own fd: usable by a process that did not load the sensor)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or pin_path()
        self.fd = open_pinned(self.path)

    @property
    def map_id(self) -> int:
        return int(fdinfo(self.fd).get("map_id", "0"))

    def mark(self, tgid: int, sig: int) -> SignalMark | None:
        raw = lookup_fd(self.fd, layouts.SIGMARK_KEY_STRUCT.pack(tgid, sig), layouts.SIGMARK_STRUCT.size)
        return None if raw is None else _mark(tgid, raw)

    def marks(self, tgid: int) -> list[SignalMark]:
        """Every mark kept for tgid, oldest first."""
        found = (self.mark(tgid, sig) for sig in range(1, 65))
        return sorted((m for m in found if m is not None), key=lambda m: m.ts_boot)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _mark(tgid: int, raw: bytes) -> SignalMark:
    rec = dict(zip(_NAMES, layouts.SIGMARK_STRUCT.unpack(raw)))
    n = rec["exe_len"] & 0x7FFFFFFF
    return SignalMark(tgid, rec["sig"], rec["ts"], rec["sender"], rec["sender_tid"], rec["code"],
                      rec["comm"].split(b"\0", 1)[0].decode(errors="replace"),
                      rec["exe"][:n].decode(errors="backslashreplace"))


def open_reader(path: str | None = None) -> MarkReader | None:
    """The reader, or None (logged) when the pinned map is not there: unpinned by someone, or never made."""
    try:
        return MarkReader(path)
    except BpfError as exc:
        log.warning("signal marks unavailable: %s", exc)
        return None


def boot_now() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)
