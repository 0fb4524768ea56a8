"""Ring-buffer record layouts, declared once.

The BPF C includes a header generated from these declarations
(:func:`c_header`) and the Python decoder unpacks with structs built from the
same declarations (:class:`Layout.struct`), so the two sides cannot drift.
``tests/test_layouts.py`` also checks the compiled object's BTF against the
offsets computed here.

Fields are laid out in declaration order with no implicit padding: every
layout lists its fields largest-first so that natural alignment holds, and
:func:`_check_alignment` refuses a declaration that would need padding.
Strings follow the fixed part as a tail, in declaration order; each string
has a generated ``<name>_len`` field (bytes, no terminator) and bit *i* of the
header's ``trunc`` field is set when string *i* was cut at its bound.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ktriage.model.families import KERNEL_FAMILIES

# name -> (C type, struct code, size)
_SCALARS = {
    "u8": ("__u8", "B", 1),
    "u16": ("__u16", "H", 2),
    "u32": ("__u32", "I", 4),
    "s32": ("__s32", "i", 4),
    "u64": ("__u64", "Q", 8),
    "s64": ("__s64", "q", 8),
}

# Families, numbered for the BPF counters (sent / lost per family).

# Bounds shared with the C side.
MAX_STR = 4096  # one string in a record, including its terminator
TAIL_CAP = 16384  # all strings of one record


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str  # a key of _SCALARS
    count: int = 1  # > 1 declares a fixed array (bytes for u8)

    @property
    def size(self) -> int:
        return _SCALARS[self.ctype][2] * self.count

    @property
    def align(self) -> int:
        return _SCALARS[self.ctype][2]

    def c_decl(self) -> str:
        ctype = _SCALARS[self.ctype][0]
        if self.count > 1:
            return f"{ctype} {self.name}[{self.count}];"
        return f"{ctype} {self.name};"

    def struct_code(self) -> str:
        code = _SCALARS[self.ctype][1]
        if self.count > 1:
            return f"{self.count}s" if self.ctype == "u8" else code * self.count
        return code


HEADER = (
    Field("seq", "u64"),
    Field("ts", "u64"),  # CLOCK_BOOTTIME ns
    Field("kind", "u16"),
    Field("trunc", "u16"),
    Field("size", "u32"),  # fixed part + tail, bytes
    Field("pid", "u32"),  # tgid of the acting task
    Field("tid", "u32"),
    Field("ppid", "u32"),
    Field("uid", "u32"),
    Field("gid", "u32"),
    Field("cpu", "u32"),
    Field("flags", "u32"),  # per-kind flag bits (KT_F_*)
    Field("mntns", "u32"),  # mount namespace inode: tells containers apart
    Field("comm", "u8", 16),
)


@dataclass(frozen=True)
class Layout:
    kind: int
    name: str
    family: str
    fields: tuple[Field, ...]
    strings: tuple[str, ...] = ()
    doc: str = ""
    _struct: struct.Struct = field(init=False, repr=False, compare=False)
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_alignment(self.name, self.all_fields())
        object.__setattr__(self, "_struct", struct.Struct("<" + "".join(f.struct_code() for f in self.all_fields())))
        names: list[str] = []
        for f in self.all_fields():
            names.extend([f.name] if f.count == 1 or f.ctype == "u8" else [f"{f.name}{i}" for i in range(f.count)])
        object.__setattr__(self, "_names", tuple(names))

    def all_fields(self) -> tuple[Field, ...]:
        lens = tuple(Field(f"{s}_len", "u16") for s in self.strings)
        fixed = HEADER + self.fields + lens
        pad = -sum(f.size for f in fixed) % 8
        return fixed + (Field("_pad", "u8", pad),) if pad else fixed

    @property
    def struct(self) -> struct.Struct:
        return self._struct

    @property
    def size(self) -> int:
        return self._struct.size

    @property
    def c_name(self) -> str:
        return f"kt_{self.name}"

    def offsets(self) -> dict[str, int]:
        out, pos = {}, 0
        for f in self.all_fields():
            out[f.name] = pos
            pos += f.size
        return out

    def field_names(self) -> tuple[str, ...]:
        """Names of the values :attr:`struct` unpacks, in order (computed once)."""
        return self._names


def _check_alignment(name: str, fields: tuple[Field, ...]) -> None:
    pos = 0
    for f in fields:
        if pos % f.align:
            raise ValueError(f"layout {name}: field {f.name} at offset {pos} is not {f.align}-aligned")
        pos += f.size


# Where a sensitive syscall came from (access, memory, module, api records).
ORIGIN = (
    Field("origin_ip", "u64"),  # user instruction pointer after the syscall
    Field("origin_sp", "u64"),  # user stack pointer
    Field("origin_start", "u64"),  # the mapping behind origin_ip
    Field("origin_end", "u64"),
    Field("origin_class", "u32"),  # ORIGIN_CLASSES
    Field("origin_flags", "u32"),  # the mapping's VM_READ 1 | VM_WRITE 2 | VM_EXEC 4
)
# Always the first strings of a layout with an origin, so the C side fills them generically.
ORIGIN_STRINGS = ("stack", "sample", "origin_path")
ORIGIN_CLASSES = {0: "none", 1: "libc", 2: "ldso", 3: "vdso", 4: "exe", 5: "file", 6: "anon"}
STACK_FRAMES = 16
SAMPLE_BYTES = 64

LAYOUTS: tuple[Layout, ...] = (
    Layout(
        1,
        "exec",
        "process",
        (
            Field("exe_ino", "u64"),
            Field("start_code", "u64"),
            Field("end_code", "u64"),
            Field("exe_nlink", "u32"),
            Field("euid", "u32"),
            Field("egid", "u32"),
            Field("old_pid", "u32"),
        ),
        ("path", "filename", "argv", "cwd", "env"),
        "a successful execve/execveat (sched_process_exec)",
    ),
    Layout(2, "fork", "process", (Field("child_pid", "u32"), Field("clone_flags", "u32")), (),
           "a new process (sched_process_fork, child is a group leader)"),
    Layout(3, "exit", "process", (Field("exit_code", "u32"), Field("_r", "u32")), (),
           "the last task of a process exits (sched_process_exit, group dead)"),
    Layout(4, "thread", "thread", (Field("new_tid", "u32"), Field("_r", "u32")), (),
           "a new task in an existing process (sched_process_fork, child not a leader)"),
    Layout(
        5,
        "image",
        "image",
        (
            Field("start", "u64"),
            Field("end", "u64"),
            Field("pgoff", "u64"),
            Field("ino", "u64"),
            Field("prot", "u32"),
            Field("how", "u32"),
        ),
        ("path",),
        "an executable file mapping: the exec'd binary, its interpreter, or mmap(PROT_EXEC) of a file",
    ),
    Layout(
        6,
        "file",
        "file",
        (
            Field("ino", "u64"),
            Field("op", "u32"),
            Field("open_flags", "u32"),
            Field("mode", "u32"),
            Field("fmode", "u32"),
            Field("ret", "s32"),
            Field("_r", "u32"),
        ),
        ("path", "path2"),
        "file create / open for write / truncate / rename / unlink / chmod +x",
    ),
    Layout(
        7,
        "net",
        "network",
        (
            Field("ret", "s32"),
            Field("op", "u16"),
            Field("af", "u16"),
            Field("proto", "u16"),
            Field("sotype", "u16"),
            Field("sport", "u16"),
            Field("dport", "u16"),
            Field("state", "u8"),
            Field("_r", "u8", 7),
            Field("saddr", "u8", 16),
            Field("daddr", "u8", 16),
        ),
        (),
        "TCP connect/accept/listen, UDP first send/receive per flow, raw and ICMP sockets",
    ),
    Layout(
        8,
        "access",
        "access",
        ORIGIN + (
            Field("addr", "u64"),
            Field("data", "u64"),
            Field("bytes", "u64"),
            Field("regs_ip", "u64"),  # PTRACE_SETREGS/SETREGSET: the instruction pointer written
            Field("op", "u32"),
            Field("request", "u32"),
            Field("target", "u32"),
            Field("result", "s32"),
            Field("count", "u32"),
            Field("_r2", "u32"),
            Field("open_flags", "u32"),
            Field("_r", "u32"),
        ),
        ORIGIN_STRINGS + ("target_name",),
        "ptrace, process_vm_readv/writev, /proc/PID/mem opens, pidfd_open/pidfd_getfd",
    ),
    Layout(
        9,
        "memory",
        "memory",
        ORIGIN + (
            Field("addr", "u64"),
            Field("length", "u64"),
            Field("op", "u32"),
            Field("prot", "u32"),
            Field("old_prot", "u32"),
            Field("mflags", "u32"),
            Field("fd", "s32"),
            Field("result", "s32"),
        ),
        ORIGIN_STRINGS + ("name",),
        "mmap/mprotect making memory executable (with the protection before), memfd_create",
    ),
    Layout(
        10,
        "module",
        "module",
        ORIGIN + (
            Field("length", "u64"),
            Field("op", "u32"),
            Field("prog_type", "u32"),
            Field("insn_cnt", "u32"),
            Field("result", "s32"),
            Field("mflags", "u32"),
            Field("_r", "u32"),
        ),
        ORIGIN_STRINGS + ("name", "path"),
        "init_module/finit_module/delete_module attempts, module_load, BPF program loads",
    ),
    Layout(
        11,
        "api",
        "api",
        ORIGIN + (
            Field("old_cap_eff", "u64"),
            Field("new_cap_eff", "u64"),
            Field("old_cap_prm", "u64"),
            Field("new_cap_prm", "u64"),
            Field("op", "u32"),
            Field("result", "s32"),
            Field("arg0", "u32"),
            Field("arg1", "u32"),
            Field("arg2", "u32"),
            Field("old_ids", "u32", 8),  # uid euid suid fsuid gid egid sgid fsgid
            Field("new_ids", "u32", 8),
        ),
        ORIGIN_STRINGS,
        "privilege changes: set*uid/set*gid/capset with the ids and capabilities before and after",
    ),
    Layout(
        12,
        "signal",
        "signal",
        (
            Field("op", "u32"),
            Field("sig", "u32"),
            Field("target", "u32"),
            Field("target_tgid", "u32"),
            Field("result", "s32"),
            Field("_r", "u32"),
        ),
        (),
        "signals sent to another process: kill, tkill, tgkill, pidfd_send_signal",
    ),
    Layout(
        13,
        "bpf_tamper",
        "module",
        (
            Field("cmd", "u32"),  # the bpf() command (BPF_CMDS)
            Field("obj_type", "u32"),  # OBJ_TYPES: which kind of ktriage object it named
            Field("obj_id", "u32"),  # the object's kernel id
            Field("result", "s32"),
        ),
        ("exe",),  # the actor's executable, from the kernel: it need not be a target nor still alive
        "another process's bpf() command on one of ktriage's own maps, programs or links (whatever the target set)",
    ),
)

BY_KIND = {layout.kind: layout for layout in LAYOUTS}
BY_NAME = {layout.name: layout for layout in LAYOUTS}

# The sensor's configuration (one entry of the ``config`` array map).
CONFIG = (
    Field("self_tgid", "u32"),  # ktriage itself: never reported
    Field("calib_tid", "u32"),  # except this thread, while calibrating
    Field("filter", "u32"),  # 1: only processes in the ``targets`` map
    Field("max_depth", "u32"),  # children are followed this many generations below a target
    Field("mask", "u32"),  # families reported when no filter is active (bit = KERNEL_FAMILIES index)
    Field("wakeup_bytes", "u32"),  # wake the consumer only once this much is pending (it also polls on a timer)
    Field("wake_mask", "u32"),  # …or at once for these families (bit = KERNEL_FAMILIES index): prompt detections
    Field("peer_tgid", "u32"),  # ktriage's watchdog: never reported either, and its signals are marked
)
# Value of the ``targets`` map (key: tgid).
TARGET = (Field("depth", "u32"), Field("mask", "u32"))
TARGET_STRUCT = struct.Struct("<II")
CONFIG_STRUCT = struct.Struct("<" + "".join(f.struct_code() for f in CONFIG))
# ktriage's own BPF objects (key of the ``kt_own`` map): what the bpf() watch compares with.
OBJ_TYPES = {1: "map", 2: "prog", 3: "link"}
OWN_KEY_STRUCT = struct.Struct("<II")  # type, id
# The bpf() commands that act on an object through its fd (union bpf_attr), by number.
BPF_CMDS = {1: "map_lookup_elem", 2: "map_update_elem", 3: "map_delete_elem", 4: "map_get_next_key",
            9: "prog_detach", 21: "map_lookup_and_delete_elem", 22: "map_freeze", 24: "map_lookup_batch",
            25: "map_lookup_and_delete_batch", 26: "map_update_batch", 27: "map_delete_batch", 29: "link_update",
            34: "link_detach"}
BPF_READ_CMDS = frozenset({"map_lookup_elem", "map_get_next_key", "map_lookup_batch"})
# A signal to a ktriage process, kept by the kernel in the pinned ``kt_sigmarks`` map (key: target
# tgid, signal) when it is generated, in the sender's context: it outlives a SIGKILL of the sensor.
SIGMARK = (
    Field("ts", "u64"),  # CLOCK_BOOTTIME ns
    Field("sender", "u32"),  # tgid of the task that generated it
    Field("sender_tid", "u32"),
    Field("sig", "u32"),
    Field("code", "s32"),  # si_code: 0 SI_USER (kill), -6 SI_TKILL, 0x80 SI_KERNEL …
    Field("target_tid", "u32"),
    Field("exe_len", "u32"),  # bytes of exe used; bit 31: cut at its bound
    Field("comm", "u8", 16),
    Field("exe", "u8", 256),  # the sender's executable
)
SIGMARK_KEY_STRUCT = struct.Struct("<II")  # target tgid, signal
SIGMARK_STRUCT = struct.Struct("<" + "".join(f.struct_code() for f in SIGMARK))
# Per-CPU counters: sent[family] then lost[family], u64 each.
STATS_STRUCT = struct.Struct(f"<{2 * len(KERNEL_FAMILIES)}Q")

# Operation codes shared with the C side.
FILE_OPS = {1: "create", 2: "open_write", 3: "truncate", 4: "rename", 5: "unlink", 6: "chmod"}
NET_OPS = {1: "connect", 2: "accept", 3: "listen", 4: "udp_send", 5: "udp_recv", 6: "socket"}
IMAGE_HOW = {1: "exec", 2: "interp", 3: "mmap"}
ACCESS_OPS = {1: "ptrace", 2: "vm_readv", 3: "vm_writev", 4: "proc_mem", 5: "pidfd_open", 6: "pidfd_getfd"}
MEMORY_OPS = {1: "mmap", 2: "mprotect", 3: "memfd_create"}
MODULE_OPS = {1: "init_module", 2: "finit_module", 3: "delete_module", 4: "module_load", 5: "bpf_prog_load"}
API_OPS = {1: "setuid", 2: "setgid", 3: "setreuid", 4: "setregid", 5: "setresuid", 6: "setresgid",
           7: "setfsuid", 8: "setfsgid", 9: "capset"}
SIGNAL_OPS = {1: "kill", 2: "tkill", 3: "tgkill", 4: "pidfd_send_signal"}
# Linux access rights (DESIGN §3), one flag set in the spirit of the Windows masks.
RIGHTS = {"MEM_READ": 0x1, "MEM_WRITE": 0x2, "REGS_READ": 0x4, "REGS_WRITE": 0x8, "ATTACH": 0x10,
          "CONTROL": 0x20, "FD_STEAL": 0x40}


def c_header() -> str:
    """The C header the BPF programs include (generated, never edited)."""
    lines = ["/* generated from ktriage/sensor/layouts.py: do not edit */", "#pragma once", ""]
    lines += [f"#define KT_MAX_STR {MAX_STR}", f"#define KT_TAIL_CAP {TAIL_CAP}", f"#define KT_NFAM {len(KERNEL_FAMILIES)}"]
    lines += [f"#define KT_FAM_{name.upper()} {i}" for i, name in enumerate(KERNEL_FAMILIES)]
    lines += [f"#define KT_STACK_FRAMES {STACK_FRAMES}", f"#define KT_SAMPLE_BYTES {SAMPLE_BYTES}"]
    lines += [f"#define KT_RIGHT_{name} {value:#x}" for name, value in RIGHTS.items()]
    lines += [f"#define KT_ORIGIN_{name.upper()} {code}" for code, name in ORIGIN_CLASSES.items()]
    for table, prefix in ((FILE_OPS, "KT_FILE_"), (NET_OPS, "KT_NET_"), (IMAGE_HOW, "KT_IMAGE_"),
                          (ACCESS_OPS, "KT_ACCESS_"), (MEMORY_OPS, "KT_MEMORY_"), (MODULE_OPS, "KT_MODULE_"),
                          (API_OPS, "KT_API_"), (SIGNAL_OPS, "KT_SIGNAL_")):
        lines += [f"#define {prefix}{name.upper()} {code}" for code, name in table.items()]
    lines.append("")
    lines.append("struct kt_stats {\n\t__u64 sent[KT_NFAM];\n\t__u64 lost[KT_NFAM];\n};")
    lines += [f"#define KT_OBJ_{name.upper()} {code}" for code, name in OBJ_TYPES.items()]
    lines.append("struct kt_own_key {\n\t__u32 type;\n\t__u32 id;\n};")
    lines.append("struct kt_sigmark_key {\n\t__u32 tgid;\n\t__u32 sig;\n};")
    for name, fields in (("kt_config", CONFIG), ("kt_target", TARGET), ("kt_sigmark", SIGMARK), ("kt_header", HEADER)):
        lines += [f"struct {name} {{", *(f"\t{f.c_decl()}" for f in fields), "};"]
    lines.append("")
    for layout in LAYOUTS:
        lines.append(f"#define KT_KIND_{layout.name.upper()} {layout.kind}")
        lines.append(f"#define KT_{layout.name.upper()}_NSTR {len(layout.strings)}")
        lines.append(f"struct {layout.c_name} {{")
        lines += [f"\t{f.c_decl()}" for f in layout.all_fields()]
        lines.append("};")
        lines.append("")
    # Referenced by one global pointer so that every layout lands in the object's
    # BTF, where tests/test_layouts.py compares it with the Python offsets.
    lines.append("struct kt_all_records {")
    lines += [f"\tstruct {layout.c_name} {layout.name};" for layout in LAYOUTS]
    lines.append("};")
    return "\n".join(lines)
