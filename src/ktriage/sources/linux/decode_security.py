"""Decoding of the security families: access, memory, module, api, signal.

Each builder takes the decoder (an :class:`Enricher`), the unpacked record, its
strings and the common event fields, and returns the events. Tables that map
kernel numbers to names are data.
"""

from __future__ import annotations

import json
import signal as signal_mod
from typing import Any, Protocol

from ktriage.model.event import Event
from ktriage.sensor.layouts import ACCESS_OPS, API_OPS, BPF_CMDS, MEMORY_OPS, MODULE_OPS, OBJ_TYPES, RIGHTS, SIGNAL_OPS
from ktriage.sources.linux.origin import MapsCache, decode_origin, prot_text
from ktriage.sources.linux.procs import ProcessTable, tgid_of


class Enricher(Protocol):
    """What the builders use of the decoder (decode.Decoder), so this module needs nothing of it."""

    procs: ProcessTable
    maps: MapsCache
    sensor_pids: set[int]
    own_objects: dict[tuple[int, int], str]

    def enrich(self, ev: Event) -> Event: ...

# ptrace request -> (name, rights)
PTRACE = {
    0: ("PTRACE_TRACEME", "ATTACH"), 1: ("PTRACE_PEEKTEXT", "MEM_READ"), 2: ("PTRACE_PEEKDATA", "MEM_READ"),
    3: ("PTRACE_PEEKUSR", "REGS_READ"), 4: ("PTRACE_POKETEXT", "MEM_WRITE"), 5: ("PTRACE_POKEDATA", "MEM_WRITE"),
    6: ("PTRACE_POKEUSR", "REGS_WRITE"), 7: ("PTRACE_CONT", "CONTROL"), 8: ("PTRACE_KILL", "CONTROL"),
    9: ("PTRACE_SINGLESTEP", "CONTROL"), 12: ("PTRACE_GETREGS", "REGS_READ"), 13: ("PTRACE_SETREGS", "REGS_WRITE"),
    14: ("PTRACE_GETFPREGS", "REGS_READ"), 15: ("PTRACE_SETFPREGS", "REGS_WRITE"), 16: ("PTRACE_ATTACH", "ATTACH"),
    17: ("PTRACE_DETACH", "CONTROL"), 24: ("PTRACE_SYSCALL", "CONTROL"), 0x4200: ("PTRACE_SETOPTIONS", "CONTROL"),
    0x4201: ("PTRACE_GETEVENTMSG", "REGS_READ"), 0x4202: ("PTRACE_GETSIGINFO", "REGS_READ"),
    0x4203: ("PTRACE_SETSIGINFO", "REGS_WRITE"), 0x4204: ("PTRACE_GETREGSET", "REGS_READ"),
    0x4205: ("PTRACE_SETREGSET", "REGS_WRITE"), 0x4206: ("PTRACE_SEIZE", "ATTACH"),
    0x4207: ("PTRACE_INTERRUPT", "CONTROL"), 0x4208: ("PTRACE_LISTEN", "CONTROL"),
    0x4209: ("PTRACE_PEEKSIGINFO", "REGS_READ"),
}
OP_RIGHTS = {"vm_readv": ("MEM_READ",), "vm_writev": ("MEM_WRITE",), "pidfd_open": ("CONTROL",),
             "pidfd_getfd": ("FD_STEAL",)}
ID_NAMES = ("uid", "euid", "suid", "fsuid", "gid", "egid", "sgid", "fsgid")
# the syscall arguments that carry the requested ids
API_ARGS = {"setuid": ("uid",), "setgid": ("gid",), "setreuid": ("ruid", "euid"), "setregid": ("rgid", "egid"),
            "setresuid": ("ruid", "euid", "suid"), "setresgid": ("rgid", "egid", "sgid"),
            "setfsuid": ("fsuid",), "setfsgid": ("fsgid",), "capset": ()}


def _rights(names: tuple[str, ...]) -> tuple[str, int]:
    return "|".join(names), sum(RIGHTS[n] for n in names)


def _proc_mem_rights(flags: int) -> tuple[str, ...]:
    mode = flags & 3
    return {0: ("MEM_READ",), 1: ("MEM_WRITE",), 2: ("MEM_READ", "MEM_WRITE")}.get(mode, ())


def access(d: Enricher, rec: dict[str, Any], s: dict[str, bytes], ev: Event) -> list[Event]:
    op = ACCESS_OPS.get(rec["op"], str(rec["op"]))
    request, target_tid, target_pid, own = None, None, rec["target"], None
    if op == "ptrace":
        request, right = PTRACE.get(rec["request"], (f"PTRACE_{rec['request']:#x}", "CONTROL"))
        names: tuple[str, ...] = (right,)
        target_tid = rec["target"]
        target_pid = tgid_of(target_tid) if request != "PTRACE_TRACEME" else ev["ppid"]
    elif op == "proc_mem":
        names = _proc_mem_rights(rec["open_flags"])
        name = s["target_name"].decode(errors="replace")
        target_pid = int(name) if name.isdigit() else ev["pid"]
        own = int(target_pid == ev["pid"])
    else:
        names = OP_RIGHTS.get(op, ())
    rights, mask = _rights(names)
    new_ip = rec["regs_ip"] or None
    out = dict(ev, op=op, request=request, rights=rights, rights_mask=mask, target_pid=target_pid,
               target_tid=target_tid, target_image=d.procs.image(target_pid) if target_pid else None,
               target_ppid=d.procs.parent(target_pid) if target_pid else None,
               target_is_sensor=int(target_pid in d.sensor_pids),
               addr=rec["addr"], data=rec["data"], bytes=rec["bytes"], count=rec["count"], new_ip=new_ip,
               new_ip_module=d.maps.resolve(target_pid, new_ip) or None if new_ip and target_pid else None,
               open_flags=rec["open_flags"] if op == "proc_mem" else None, own=own, result=rec["result"])
    out.update(decode_origin(rec, s, ev["pid"], d.maps))
    return [d.enrich(out)]


def memory(d: Enricher, rec: dict[str, Any], s: dict[str, bytes], ev: Event) -> list[Event]:
    op = MEMORY_OPS.get(rec["op"], str(rec["op"]))
    name = s["name"].decode("utf-8", "backslashreplace") or None
    if op == "mprotect":
        anon, old = rec["mflags"] & 1, prot_text(rec["old_prot"])
    else:
        anon, old = int(op == "mmap" and rec["fd"] < 0), None
    out = dict(ev, op=op, addr=rec["addr"], length=rec["length"],
               prot=prot_text(rec["prot"]) if op != "memfd_create" else None, old_prot=old,
               anon=anon if op != "memfd_create" else None, name=name,
               mmap_flags=rec["mflags"] if op != "mprotect" else None, fd=rec["fd"] if rec["fd"] >= 0 else None,
               result=rec["result"])
    out.update(decode_origin(rec, s, ev["pid"], d.maps))
    if op == "mmap":
        d.maps.invalidate(ev["pid"])
    return [d.enrich(out)]


def module(d: Enricher, rec: dict[str, Any], s: dict[str, bytes], ev: Event) -> list[Event]:
    op = MODULE_OPS.get(rec["op"], str(rec["op"]))
    out = dict(ev, op=op, name=s["name"].decode("utf-8", "backslashreplace") or None,
               path=s["path"].decode("utf-8", "backslashreplace") or None,
               length=rec["length"] if op == "init_module" else None,
               prog_type=rec["prog_type"] if op == "bpf_prog_load" else None,
               insn_cnt=rec["insn_cnt"] if op == "bpf_prog_load" else None,
               flags=rec["mflags"], result=rec["result"])
    out.update(decode_origin(rec, s, ev["pid"], d.maps))
    return [d.enrich(out)]


def api(d: Enricher, rec: dict[str, Any], s: dict[str, bytes], ev: Event) -> list[Event]:
    op = API_OPS.get(rec["op"], str(rec["op"]))
    before = [rec[f"old_ids{i}"] for i in range(len(ID_NAMES))]
    after = [rec[f"new_ids{i}"] for i in range(len(ID_NAMES))]
    args = dict(zip(API_ARGS.get(op, ()), (rec["arg0"], rec["arg1"], rec["arg2"])))
    out = dict(ev, op=op, args=json.dumps({k: (-1 if v == 0xFFFFFFFF else v) for k, v in args.items()}),
               old_uid=before[0], new_uid=after[0], old_euid=before[1], new_euid=after[1],
               old_gid=before[4], new_gid=after[4],
               ids_before=json.dumps(dict(zip(ID_NAMES, before))), ids_after=json.dumps(dict(zip(ID_NAMES, after))),
               caps_before=f"{rec['old_cap_eff']:#x}", caps_after=f"{rec['new_cap_eff']:#x}",
               caps_gained=int(bool(rec["new_cap_eff"] & ~rec["old_cap_eff"])), result=rec["result"])
    out.update(decode_origin(rec, s, ev["pid"], d.maps))
    return [d.enrich(out)]


def _signal_name(sig: int) -> str:
    try:
        return signal_mod.Signals(sig).name
    except ValueError:
        return f"SIG{sig}"


def signal(d: Enricher, rec: dict[str, Any], s: dict[str, bytes], ev: Event) -> list[Event]:
    op = SIGNAL_OPS.get(rec["op"], str(rec["op"]))
    target = rec["target"] - (1 << 32) if rec["target"] >= 1 << 31 else rec["target"]
    if op in ("kill", "pidfd_send_signal"):
        pid, tid = target, None
    else:
        tid = target
        pid = rec["target_tgid"] or tgid_of(tid)
    out = dict(ev, op=op, signal=rec["sig"], signal_name=_signal_name(rec["sig"]), target_pid=pid,
               target_tid=tid, target_image=d.procs.image(pid) if pid > 0 else None,
               target_ppid=d.procs.parent(pid) if pid > 0 else None,
               target_is_sensor=int(pid in d.sensor_pids), result=rec["result"])
    return [d.enrich(out)]


def bpf_tamper(d: Enricher, rec: dict[str, Any], s: dict[str, bytes], ev: Event) -> list[Event]:
    """A bpf() command of another process on one of ktriage's objects: a module event, op bpf_<command>."""
    kind = OBJ_TYPES.get(rec["obj_type"], str(rec["obj_type"]))
    out = dict(ev, op="bpf_" + BPF_CMDS.get(rec["cmd"], str(rec["cmd"])),
               name=d.own_objects.get((rec["obj_type"], rec["obj_id"])), bpf_object=f"{kind} {rec['obj_id']}",
               target_is_sensor=1, result=rec["result"])
    out = d.enrich(out)
    if s["exe"]:  # the kernel's word: the actor may be outside the target set, or gone already
        out["image"] = s["exe"].decode("utf-8", "backslashreplace")
    return [out]


BUILDERS = {"access": access, "memory": memory, "module": module, "api": api, "signal": signal,
            "bpf_tamper": bpf_tamper}
