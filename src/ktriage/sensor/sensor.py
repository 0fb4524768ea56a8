"""The live kernel sensor: build, load, configure and attach the BPF programs,
then hand out raw ring-buffer records.

Only attach types the start-up probe found working are used: the sched
programs come as ``tp_btf_*`` and ``raw_tp_*`` twins and one flavour is loaded;
syscall tracepoints this kernel does not have are left out (and logged).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ktriage.errors import BpfError, SetupError
from ktriage.model.families import KERNEL_FAMILIES
from ktriage.sensor import build, layouts, sigmarks, tracefs
from ktriage.sensor.libbpf import BpfObject, RingBuffer, fdinfo, possible_cpus
from ktriage.sensor.probe import ProbeResult, probe

log = logging.getLogger(__name__)

DEFAULT_RING_BYTES = 16 << 20
_U32 = struct.Struct("<I")


ALL_FAMILIES = frozenset(KERNEL_FAMILIES)
# records of these families wake the consumer at once (they complete most detections);
# the others are read on its timer (live.POLL_MS) or once ring_bytes / 8 are pending
WAKE_FAMILIES = frozenset({"access", "memory", "module", "api", "signal"})


def family_mask(families: frozenset[str] | set[str]) -> int:
    return sum(1 << i for i, name in enumerate(KERNEL_FAMILIES) if name in families)


@dataclass
class SensorOptions:
    ring_bytes: int = DEFAULT_RING_BYTES
    pids: dict[int, int] = field(default_factory=dict)  # target pid -> generation; empty: the whole host
    families: frozenset[str] = ALL_FAMILIES  # the streams reported
    max_depth: int = 0xFFFFFFFF  # generations of children followed below a target
    targeted: bool = False  # filter to the target set even while it is empty (targets added later)
    peer_tgid: int = 0  # ktriage's watchdog, if one runs: treated as ktriage itself


def _sched_flavour(result: ProbeResult) -> str:
    for flavour in ("tp_btf", "raw_tp"):
        if result.works[flavour]:
            return flavour
    raise SetupError("neither BTF nor raw tracepoints can be attached on this kernel")


class Sensor:
    def __init__(self, options: SensorOptions) -> None:
        if options.ring_bytes < 4096 or options.ring_bytes & (options.ring_bytes - 1):
            raise SetupError(f"ring buffer size {options.ring_bytes} is not a power of two >= 4096")
        self.options = options
        self.obj: BpfObject | None = None
        self.ring: RingBuffer | None = None
        self.probe: ProbeResult | None = None
        self.skipped: list[str] = []
        self.expected_cfg = b""  # what kt_cfg must hold from seal() on (the user-space copy)
        self.frozen: list[str] = []  # maps frozen by seal()
        self.unfrozen: dict[str, str] = {}  # maps that could not be frozen, and why
        self.own: dict[tuple[int, int], str] = {}  # (OBJ_TYPES code, id) -> name, of ktriage's objects

    def start(self) -> None:
        events_dir = tracefs.ensure_mounted() / "events"
        self.probe = probe()
        if not self.probe.works["tracepoint"]:
            raise SetupError(f"tracepoints cannot be attached: {self.probe.reasons['tracepoint']}")
        flavour = _sched_flavour(self.probe)
        obj = self.obj = BpfObject(build.build("ktriage"))
        obj.map("events").set_max_entries(self.options.ring_bytes)
        sigmarks.ensure_pin_dir()
        obj.map("kt_sigmarks").set_pin_path(sigmarks.pin_path())
        obj.set_autoload(lambda name, section: self._wanted(name, section, flavour, events_dir))
        obj.load()
        self.configure(calib_tid=0)
        self.set_targets(self.options.pids)
        obj.attach_loaded()
        self.ring = RingBuffer(obj.map("events"))
        log.info("sensor attached: %d programs (%s), skipped: %s", len(obj.links), flavour,
                 ", ".join(self.skipped) or "none")

    def _wanted(self, name: str, section: str, flavour: str, events_dir: Path) -> bool:
        if name.endswith("_modsys"):
            # raw syscall exit, only where the module syscalls have no tracepoints of their own
            return name.startswith(flavour + "_") and not (events_dir / "syscalls/sys_exit_finit_module").is_dir()
        if name.startswith(("tp_btf_", "raw_tp_")):
            return name.startswith(flavour + "_")
        if section.startswith("tracepoint/") and not (events_dir / section.split("/", 1)[1]).is_dir():
            self.skipped.append(section.split("/", 1)[1])
            return False
        return True

    def configure(self, calib_tid: int) -> None:
        assert self.obj is not None
        o = self.options
        value = layouts.CONFIG_STRUCT.pack(os.getpid(), calib_tid, int(bool(o.pids) or o.targeted), o.max_depth,
                                           family_mask(o.families), o.ring_bytes // 8, family_mask(WAKE_FAMILIES),
                                           o.peer_tgid)
        self.obj.map("kt_cfg").update(_U32.pack(0), value)
        self.expected_cfg = value

    def seal(self) -> None:
        """After start-up configuration: note ktriage's own objects for the kernel's bpf() watch, then
        freeze every map user space no longer writes (the target set stays open in targeted mode,
        where clients change it). Writes by anyone through bpf() then fail with EPERM."""
        assert self.obj is not None
        self._register_own()
        keep_open = {"events"} | ({"targets"} if self.options.targeted else set())
        for m in self.obj.maps():
            if m.name in keep_open or m.name.endswith((".bss", ".data")):
                continue  # the ring cannot be frozen; .bss holds only the BTF anchor (never read)
            try:
                m.freeze()
                self.frozen.append(m.name)
            except BpfError as exc:
                self.unfrozen[m.name] = str(exc)
                log.warning("cannot freeze map %s: %s", m.name, exc)

    def _register_own(self) -> None:
        assert self.obj is not None
        kinds = {1: ("map_id", {m.name: m.fd for m in self.obj.maps()}),
                 2: ("prog_id", self.obj.program_fds()), 3: ("link_id", self.obj.link_fds())}
        for code, (key, fds) in kinds.items():
            for name, fd in fds.items():
                self.own[(code, int(fdinfo(fd)[key]))] = name
        own = self.obj.map("kt_own")
        for (code, obj_id), name in self.own.items():
            reads = int(name != "kt_sigmarks")  # shared by every ktriage instance, which all read it
            own.update(layouts.OWN_KEY_STRUCT.pack(code, obj_id), _U32.pack(reads))

    def set_targets(self, pids: dict[int, int]) -> None:
        """Add pids (pid -> generation below a root) to the followed set; their
        children join it in the kernel, down to max_depth generations."""
        assert self.obj is not None
        mask = family_mask(self.options.families)
        for pid, depth in pids.items():
            if depth <= self.options.max_depth:
                self.obj.map("targets").update(_U32.pack(pid), layouts.TARGET_STRUCT.pack(depth, mask))

    def remove_targets(self, pids: list[int]) -> None:
        """Stop following these pids (their children already followed stay until they exit)."""
        assert self.obj is not None
        targets = self.obj.map("targets")
        for pid in pids:
            targets.delete(_U32.pack(pid))

    def target_count(self) -> int:
        """How many processes the kernel follows now (its targets map)."""
        assert self.obj is not None
        return len(self.obj.map("targets").keys(_U32.size, 1 << 20))

    def read_cfg(self) -> bytes:
        assert self.obj is not None
        return self.obj.map("kt_cfg").lookup(_U32.pack(0), layouts.CONFIG_STRUCT.size) or b""

    def poll(self, timeout_ms: int) -> list[bytes]:
        assert self.ring is not None
        return self.ring.poll(timeout_ms)

    def counters(self) -> tuple[dict[str, int], dict[str, int]]:
        """BPF-side (sent, lost) per family, summed over CPUs."""
        assert self.obj is not None
        ncpu, size = possible_cpus(), layouts.STATS_STRUCT.size
        raw = self.obj.map("stats").lookup(_U32.pack(0), size * ncpu) or b""
        nfam = len(KERNEL_FAMILIES)
        sent, lost = dict.fromkeys(KERNEL_FAMILIES, 0), dict.fromkeys(KERNEL_FAMILIES, 0)
        for cpu in range(len(raw) // size):
            values = layouts.STATS_STRUCT.unpack_from(raw, cpu * size)
            for i, fam in enumerate(KERNEL_FAMILIES):
                sent[fam] += values[i]
                lost[fam] += values[nfam + i]
        return sent, lost

    def detach(self) -> None:
        """Stop the kernel side: after this, one poll(0) reads every record that will ever come,
        so the counters add up exactly (sent - received = lost)."""
        if self.obj:
            self.obj.detach()

    def close(self) -> None:
        if self.ring:
            self.ring.close()
            self.ring = None
        if self.obj:
            self.obj.close()
            self.obj = None


def calibrate_created_bit(sensor: Sensor, workdir: str) -> tuple[int, list[bytes]]:
    """Learn which f_mode bit means "this open created the file" (it moved
    between kernel versions) by creating a file and re-opening it ourselves.

    Returns the bit (0 if it could not be learned) and every record polled
    meanwhile (the two calibration opens included), which the caller must
    still process so that the counters add up.
    """
    path = os.path.join(workdir, ".ktriage-calibrate")
    sensor.configure(calib_tid=threading.get_native_id())
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    finally:
        sensor.configure(calib_tid=0)
        os.unlink(path)
    fmodes, polled = _poll_own_fmodes(sensor, path)
    if len(fmodes) != 2:
        log.warning("f_mode calibration saw %d of 2 opens: file creation reported as open_write", len(fmodes))
        return 0, polled
    diff = fmodes[0] & ~fmodes[1]
    if bin(diff).count("1") != 1:
        log.warning("f_mode calibration ambiguous (%#x vs %#x)", fmodes[0], fmodes[1])
        return 0, polled
    return diff, polled


def _poll_own_fmodes(sensor: Sensor, path: str) -> tuple[list[int], list[bytes]]:
    layout = layouts.BY_NAME["file"]
    kind, names = layout.kind.to_bytes(2, "little"), layout.field_names()
    fmodes: list[int] = []
    polled: list[bytes] = []
    for _ in range(40):
        for raw in sensor.poll(50):
            polled.append(raw)
            rec = dict(zip(names, layout.struct.unpack_from(raw))) if raw[16:18] == kind else None
            if rec and rec["pid"] == os.getpid():
                if raw[layout.size:layout.size + rec["path_len"]].endswith(os.path.basename(path).encode()):
                    fmodes.append(rec["fmode"])
        if len(fmodes) >= 2:
            break
    return fmodes, polled
