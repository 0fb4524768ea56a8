"""Decode ring-buffer records into normalized events (model/families.py).

One record may yield more than one event: an exec record also yields the
``image`` event of the executed binary. Records that cannot be decoded are
counted in :attr:`Decoder.errors`, never raised.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shlex
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ktriage.model.event import Event
from ktriage.sensor.layouts import BY_KIND, FILE_OPS, IMAGE_HOW, NET_OPS, Layout
from ktriage.sources.linux import decode_security
from ktriage.sources.linux.origin import MapsCache
from ktriage.sources.linux.procs import ProcessTable

log = logging.getLogger(__name__)

_KIND = slice(16, 18)  # header: seq u64, ts u64, kind u16
_AF = {2: "inet", 10: "inet6", 17: "packet"}
_PROTO = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 255: "raw", 0: "ip"}
_TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
               7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}


def boot_to_epoch_offset() -> int:
    """ns to add to CLOCK_BOOTTIME to get the UTC epoch time."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _addr(af: int, raw: bytes) -> str | None:
    if af == 2:
        return str(ipaddress.IPv4Address(raw[:4]))
    if af == 10:
        return str(ipaddress.IPv6Address(raw[:16]))
    return None


def _path(raw: bytes) -> str:
    """An absolute path without . or .. components or doubled slashes (a user's string may have them)."""
    path = _text(raw)
    if path.startswith("/") and "/." not in path and "//" not in path and not path.endswith("/"):
        return path  # already what normpath would give
    return os.path.normpath(path)


def _ld_env(raw: bytes) -> str | None:
    """Only the dynamic loader's variables are kept from an environment."""
    if b"LD_" not in raw:
        return None
    found = dict(v.split("=", 1) for v in (_text(x) for x in raw.split(b"\0") if x.startswith(b"LD_")) if "=" in v)
    return json.dumps(found) if found else None


@dataclass(frozen=True)
class _Plan:
    """What decoding one record kind needs, looked up once per record."""

    layout: Layout
    names: tuple[str, ...]
    unpack: Callable[[bytes], tuple[Any, ...]]
    size: int
    strings: tuple[tuple[str, str], ...]  # (string, its length field)
    build: Callable[[dict[str, Any], dict[str, bytes], Event], list[Event]]

    @staticmethod
    def of(layout: Layout, build: Callable[[dict[str, Any], dict[str, bytes], Event], list[Event]]) -> _Plan:
        return _Plan(layout, layout.field_names(), layout.struct.unpack_from, layout.size,
                     tuple((name, f"{name}_len") for name in layout.strings), build)


class Decoder:
    def __init__(self, host: str, procs: ProcessTable, clock_offset: int, created_bit: int = 0,
                 families: frozenset[str] | None = None) -> None:
        self.host = host
        self.procs = procs
        self.maps = MapsCache()
        self.sensor_pids = {os.getpid()}  # ktriage's processes (the sensor, its watchdog): targets of tamper
        self.own_objects: dict[tuple[int, int], str] = {}  # ktriage's BPF objects: (type, id) -> name
        self.source = "ebpf"
        self.families = families  # None: all; else derived events outside it are not produced
        self.clock_offset = clock_offset
        self.created_bit = created_bit
        self.errors = 0
        self.records: Counter[str] = Counter()  # decoded records per family
        self._comms: dict[bytes, str] = {}
        self._builders: dict[str, Callable[[dict[str, Any], dict[str, bytes], Event], list[Event]]] = {
            "exec": self._exec, "fork": self._fork, "exit": self._exit, "thread": self._thread,
            "image": self._image, "file": self._file, "net": self._net,
        }
        for name, build in decode_security.BUILDERS.items():
            self._builders[name] = lambda rec, s, ev, build=build: build(self, rec, s, ev)
        self._plans = {kind: _Plan.of(layout, self._builders[layout.name]) for kind, layout in BY_KIND.items()}

    def decode_many(self, raws: list[bytes]) -> list[Event]:
        out: list[Event] = []
        for raw in raws:
            out.extend(self.decode(raw))
        return out

    def decode(self, raw: bytes) -> list[Event]:
        plan = self._plans.get(raw[16] | raw[17] << 8)  # header: seq u64, ts u64, kind u16
        if plan is None or len(raw) < plan.size:
            self.errors += 1
            log.debug("undecodable record: %d bytes, kind %s", len(raw), raw[_KIND].hex())
            return []
        rec = dict(zip(plan.names, plan.unpack(raw)))
        strings = self._strings(plan, rec, raw)
        if strings is None:
            self.errors += 1
            return []
        self.records[plan.layout.family] += 1
        try:
            return plan.build(rec, strings, self._common(plan.layout, rec))
        except (KeyError, ValueError, IndexError, struct.error) as exc:
            # a record the builder cannot make sense of: counted, never fatal to the recording
            self.errors += 1
            log.warning("cannot decode %s record (seq %d): %r", plan.layout.name, rec["seq"], exc)
            return []

    @staticmethod
    def _strings(plan: _Plan, rec: dict[str, Any], raw: bytes) -> dict[str, bytes] | None:
        out, pos = {}, plan.size
        for name, len_key in plan.strings:
            end = pos + rec[len_key]
            if end > len(raw):
                return None
            out[name] = raw[pos:end]
            pos = end
        return out

    def _common(self, layout: Layout, rec: dict[str, Any]) -> Event:
        flags = rec["trunc"]
        trunc = ",".join(name for i, name in enumerate(layout.strings) if flags >> i & 1) if flags else None
        return {
            "family": layout.family, "ts": rec["ts"] + self.clock_offset, "host": self.host, "source": self.source,
            "seq": rec["seq"], "pid": rec["pid"], "tid": rec["tid"], "ppid": rec["ppid"], "uid": rec["uid"],
            "comm": self._comm(rec["comm"]), "mntns": rec["mntns"],
            "truncated": trunc or None,
        }

    def _comm(self, raw: bytes) -> str:
        comm = self._comms.get(raw)
        if comm is None:
            if len(self._comms) >= 4096:  # bounded: task names are few, but anyone can set one
                self._comms.clear()
            comm = self._comms[raw] = _text(raw.split(b"\0", 1)[0])
        return comm

    def enrich(self, ev: Event) -> Event:
        ev["image"] = self.procs.image(ev["pid"])
        ev["parent_image"] = self.procs.image(ev["ppid"]) if ev["ppid"] else ""
        return ev

    def _exec(self, rec: dict[str, Any], s: dict[str, bytes], ev: Event) -> list[Event]:
        path = _text(s["path"])
        argv = [_text(a) for a in s["argv"].rstrip(b"\0").split(b"\0")] if s["argv"] else []
        self.procs.on_exec(ev["pid"], path)
        self.maps.invalidate(ev["pid"])
        proc = dict(ev, action="exec", path=path, filename=_text(s["filename"]), argv=json.dumps(argv),
                    cmdline=shlex.join(argv), cwd=_text(s["cwd"]), euid=rec["euid"], egid=rec["egid"],
                    exe_ino=rec["exe_ino"], exe_deleted=int(rec["exe_nlink"] == 0), ld_env=_ld_env(s["env"]))
        image = dict(ev, family="image", how="exec", path=path, start=rec["start_code"], end=rec["end_code"],
                     pgoff=0, ino=rec["exe_ino"], prot=5)
        image["truncated"] = "path" if "path" in (ev["truncated"] or "").split(",") else None
        if self.families is not None and "image" not in self.families:
            return [self.enrich(proc)]
        return [self.enrich(proc), self.enrich(image)]

    def _fork(self, rec: dict[str, Any], s: dict[str, bytes], ev: Event) -> list[Event]:
        self.procs.on_fork(ev["pid"], rec["child_pid"])
        return [self.enrich(dict(ev, action="fork", child_pid=rec["child_pid"]))]

    def _exit(self, rec: dict[str, Any], s: dict[str, bytes], ev: Event) -> list[Event]:
        code = rec["exit_code"]
        signal, status = code & 0x7F, (code >> 8) & 0xFF
        out = self.enrich(dict(ev, action="exit", exit_status=None if signal else status,
                                exit_signal=signal or None))
        self.procs.on_exit(ev["pid"])
        self.maps.invalidate(ev["pid"])
        return [out]

    def _thread(self, rec: dict[str, Any], s: dict[str, bytes], ev: Event) -> list[Event]:
        return [self.enrich(dict(ev, action="create", new_tid=rec["new_tid"]))]

    def _image(self, rec: dict[str, Any], s: dict[str, bytes], ev: Event) -> list[Event]:
        self.maps.invalidate(ev["pid"])
        return [self.enrich(dict(ev, how=IMAGE_HOW.get(rec["how"], str(rec["how"])), path=_text(s["path"]),
                                  start=rec["start"], end=rec["end"], pgoff=rec["pgoff"], ino=rec["ino"],
                                  prot=rec["prot"]))]

    def _file(self, rec: dict[str, Any], s: dict[str, bytes], ev: Event) -> list[Event]:
        op = FILE_OPS.get(rec["op"], str(rec["op"]))
        if op in ("open_write", "truncate") and self.created_bit and rec["fmode"] & self.created_bit:
            op = "create"
        path2 = _path(s["path2"]) if s["path2"] else None
        return [self.enrich(dict(ev, op=op, path=_path(s["path"]), path2=path2,
                                  open_flags=rec["open_flags"], mode=rec["mode"], ino=rec["ino"] or None))]

    def _net(self, rec: dict[str, Any], s: dict[str, bytes], ev: Event) -> list[Event]:
        af, proto = rec["af"], rec["proto"]
        if rec["sotype"] == 3 and proto not in (1, 58):
            proto_name = "raw"
        else:
            proto_name = _PROTO.get(proto, str(proto))
        op = NET_OPS.get(rec["op"], str(rec["op"]))
        sock_op = op == "socket"
        return [self.enrich(dict(
            ev, op=op, proto=proto_name, af=_AF.get(af, str(af)),
            state=None if sock_op or proto != 6 else _TCP_STATES.get(rec["state"], str(rec["state"])),
            laddr=None if sock_op else _addr(af, rec["saddr"]), lport=None if sock_op else rec["sport"],
            raddr=None if sock_op or op == "listen" else _addr(af, rec["daddr"]),
            rport=None if sock_op or op == "listen" else rec["dport"], result=rec["ret"]))]
