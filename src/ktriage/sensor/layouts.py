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
FAMILIES = ("process", "thread", "image", "file", "network")

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

    def __post_init__(self) -> None:
        _check_alignment(self.name, self.all_fields())
        object.__setattr__(self, "_struct", struct.Struct("<" + "".join(f.struct_code() for f in self.all_fields())))

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

    def field_names(self) -> list[str]:
        """Names of the values :attr:`struct` unpacks, in order."""
        names: list[str] = []
        for f in self.all_fields():
            names.extend([f.name] if f.count == 1 or f.ctype == "u8" else [f"{f.name}{i}" for i in range(f.count)])
        return names


def _check_alignment(name: str, fields: tuple[Field, ...]) -> None:
    pos = 0
    for f in fields:
        if pos % f.align:
            raise ValueError(f"layout {name}: field {f.name} at offset {pos} is not {f.align}-aligned")
        pos += f.size


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
        ("path", "filename", "argv", "cwd"),
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
)

BY_KIND = {layout.kind: layout for layout in LAYOUTS}
BY_NAME = {layout.name: layout for layout in LAYOUTS}

# The sensor's configuration (one entry of the ``config`` array map).
CONFIG = (
    Field("self_tgid", "u32"),  # ktriage itself: never reported
    Field("calib_tid", "u32"),  # except this thread, while calibrating
    Field("filter", "u32"),  # 1: only processes in the ``targets`` map
    Field("_r", "u32"),
)
CONFIG_STRUCT = struct.Struct("<" + "".join(f.struct_code() for f in CONFIG))
# Per-CPU counters: sent[family] then lost[family], u64 each.
STATS_STRUCT = struct.Struct(f"<{2 * len(FAMILIES)}Q")

# Operation codes shared with the C side.
FILE_OPS = {1: "create", 2: "open_write", 3: "truncate", 4: "rename", 5: "unlink", 6: "chmod"}
NET_OPS = {1: "connect", 2: "accept", 3: "listen", 4: "udp_send", 5: "udp_recv", 6: "socket"}
IMAGE_HOW = {1: "exec", 2: "interp", 3: "mmap"}


def c_header() -> str:
    """The C header the BPF programs include (generated, never edited)."""
    lines = ["/* generated from ktriage/sensor/layouts.py: do not edit */", "#pragma once", ""]
    lines += [f"#define KT_MAX_STR {MAX_STR}", f"#define KT_TAIL_CAP {TAIL_CAP}", f"#define KT_NFAM {len(FAMILIES)}"]
    lines += [f"#define KT_FAM_{name.upper()} {i}" for i, name in enumerate(FAMILIES)]
    for table, prefix in ((FILE_OPS, "KT_FILE_"), (NET_OPS, "KT_NET_"), (IMAGE_HOW, "KT_IMAGE_")):
        lines += [f"#define {prefix}{name.upper()} {code}" for code, name in table.items()]
    lines.append("")
    lines.append("struct kt_stats {\n\t__u64 sent[KT_NFAM];\n\t__u64 lost[KT_NFAM];\n};")
    lines.append("struct kt_config {")
    lines += [f"\t{f.c_decl()}" for f in CONFIG]
    lines.append("};")
    lines.append("struct kt_header {")
    lines += [f"\t{f.c_decl()}" for f in HEADER]
    lines.append("};")
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
