"""Origin of a sensitive syscall, in user space: the kernel's class of the
mapping behind the instruction pointer, the byte sample and its entropy, and
user stack frames resolved to ``module+offset`` from /proc/PID/maps.

The maps of a process are cached and dropped when it execs, maps executable
memory or exits (the decoder calls :meth:`MapsCache.invalidate`).
"""

from __future__ import annotations

import json
import math
import os
import struct
from bisect import bisect_right
from collections import Counter, OrderedDict
from typing import Any

from ktriage.sensor.layouts import ORIGIN_CLASSES

Mapping = tuple[int, int, int, str, str]  # start, end, file offset, perms, name


def entropy(sample: bytes) -> float:
    """Shannon entropy in bits per byte (at most log2(len) for short samples)."""
    if not sample:
        return 0.0
    n = len(sample)
    return -sum(c / n * math.log2(c / n) for c in Counter(sample).values())


def prot_text(flags: int) -> str:
    return "".join(ch if flags & bit else "-" for ch, bit in (("r", 1), ("w", 2), ("x", 4)))


def _parse_maps(text: str) -> list[Mapping]:
    out = []
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 5:
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        out.append((start, end, int(parts[2], 16), parts[1], parts[5] if len(parts) == 6 else ""))
    return out


class MapsCache:
    def __init__(self, capacity: int = 512) -> None:
        self.capacity = capacity
        self._maps: OrderedDict[int, tuple[list[int], list[Mapping]]] = OrderedDict()

    def invalidate(self, pid: int) -> None:
        self._maps.pop(pid, None)

    def _load(self, pid: int) -> tuple[list[int], list[Mapping]]:
        cached = self._maps.get(pid)
        if cached is not None:
            self._maps.move_to_end(pid)
            return cached
        try:
            with open(f"/proc/{pid}/maps") as f:
                maps = _parse_maps(f.read())
        except OSError:
            maps = []
        entry = ([m[0] for m in maps], maps)
        self._maps[pid] = entry
        if len(self._maps) > self.capacity:
            self._maps.popitem(last=False)
        return entry

    def mapping(self, pid: int, addr: int) -> Mapping | None:
        starts, maps = self._load(pid)
        i = bisect_right(starts, addr) - 1
        if i < 0 or addr >= maps[i][1]:
            return None
        return maps[i]

    def resolve(self, pid: int, addr: int) -> str:
        """module+offset; anonymous memory as [anon PERMS]+offset, e.g. [anon r-x]+0x10."""
        found = self.mapping(pid, addr)
        if found is None:
            return ""
        start, _end, offset, perms, name = found
        if name.startswith("/"):
            return f"{os.path.basename(name)}+{addr - start + offset:#x}"
        return f"{name or f'[anon {perms[:3]}]'}+{addr - start:#x}"


def decode_origin(rec: dict[str, Any], strings: dict[str, bytes], pid: int, maps: MapsCache) -> dict[str, Any]:
    """The origin columns of an event, from a record's origin fields and strings."""
    ip = rec["origin_ip"]
    cls = ORIGIN_CLASSES.get(rec["origin_class"], str(rec["origin_class"]))
    raw_stack = strings["stack"]
    frames = [f for f in struct.unpack(f"<{len(raw_stack) // 8}Q", raw_stack[: len(raw_stack) // 8 * 8]) if f]
    if not frames or frames[0] != ip:
        frames.insert(0, ip)
    resolved = [[f, maps.resolve(pid, f)] for f in frames]
    module = resolved[0][1] or (f"[{cls}]+{ip - rec['origin_start']:#x}" if rec["origin_start"] else "")
    sample = strings["sample"]
    anomaly = stack_anomaly(maps.mapping(pid, rec["origin_sp"]), resolved[1:])
    return {
        "origin_ip": ip, "origin_class": cls, "origin_module": module,
        "origin_path": strings["origin_path"].decode("utf-8", "backslashreplace") or None,
        "origin_start": rec["origin_start"], "origin_end": rec["origin_end"],
        "origin_prot": prot_text(rec["origin_flags"]), "origin_sp": rec["origin_sp"],
        "sample": sample.hex() or None, "sample_entropy": round(entropy(sample), 3) if sample else None,
        "stack": json.dumps(resolved), "stack_anomaly": anomaly,
    }


def stack_anomaly(sp_mapping: Mapping | None, frames: list[list[Any]]) -> str | None:
    """Why the user stack looks forged: the stack pointer in a heap, file or
    executable mapping (a pivot), or a caller frame in anonymous executable
    memory. Unknown (process gone) is not an anomaly."""
    if sp_mapping is not None:
        perms, name = sp_mapping[3], sp_mapping[4]
        if name == "[heap]" or name.startswith("/") or "x" in perms:
            return f"stack pointer in {name or 'anonymous'} {perms[:3]} memory"
    for i, (_ip, sym) in enumerate(frames, start=1):
        if sym.startswith("[anon") and "x" in sym.split("]")[0]:
            return f"frame #{i} in anonymous executable memory ({sym})"
    return None
