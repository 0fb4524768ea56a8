"""The event model (DESIGN §3): common fields and each family's fields.

An event is a plain dict: the common keys below, ``family``, and the keys of
its family. The store derives its tables from these declarations, so adding a
field here adds a column (the migration is additive and automatic).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    sqltype: str  # INTEGER | TEXT | REAL
    doc: str


COMMON = (
    Column("ts", "INTEGER", "event time, ns since the epoch (UTC)"),
    Column("host", "TEXT", "host name of the sensor or of the log's computer"),
    Column("source", "TEXT", "where the event came from: ebpf, or a log file"),
    Column("seq", "INTEGER", "per-source sequence number; a gap means a drop"),
    Column("pid", "INTEGER", "acting process (tgid)"),
    Column("tid", "INTEGER", "acting thread"),
    Column("ppid", "INTEGER", "parent of the acting process"),
    Column("uid", "INTEGER", "real uid of the acting task"),
    Column("comm", "TEXT", "task name (16 bytes, kernel's comm)"),
    Column("image", "TEXT", "executable path of the acting process"),
    Column("parent_image", "TEXT", "executable path of its parent, when known"),
    Column("mntns", "INTEGER", "mount namespace inode (tells containers apart)"),
    Column("truncated", "TEXT", "comma-separated fields cut at their size bound, else NULL"),
)

FAMILIES: dict[str, tuple[Column, ...]] = {
    "process": (
        Column("action", "TEXT", "exec | fork | exit"),
        Column("path", "TEXT", "exec: the executable's resolved path"),
        Column("filename", "TEXT", "exec: the path as passed to execve"),
        Column("cmdline", "TEXT", "exec: argv joined shell-style"),
        Column("argv", "TEXT", "exec: argv as a JSON array"),
        Column("cwd", "TEXT", "exec: working directory"),
        Column("euid", "INTEGER", "exec: effective uid after exec"),
        Column("egid", "INTEGER", "exec: effective gid after exec"),
        Column("exe_ino", "INTEGER", "exec: inode of the executable"),
        Column("exe_deleted", "INTEGER", "exec: 1 when the executable has no link left (memfd, deleted file)"),
        Column("child_pid", "INTEGER", "fork: the new process"),
        Column("exit_status", "INTEGER", "exit: exit status, when it exited normally"),
        Column("exit_signal", "INTEGER", "exit: terminating signal, when killed"),
    ),
    "thread": (
        Column("action", "TEXT", "create"),
        Column("new_tid", "INTEGER", "the new task; tid is the creating task"),
    ),
    "image": (
        Column("how", "TEXT", "exec (the binary) | interp (its loader) | mmap (PROT_EXEC file mapping)"),
        Column("path", "TEXT", "mapped file"),
        Column("start", "INTEGER", "first address of the executable range"),
        Column("end", "INTEGER", "end address (exclusive)"),
        Column("pgoff", "INTEGER", "file offset of the mapping, pages (mmap: bytes)"),
        Column("ino", "INTEGER", "inode of the mapped file"),
        Column("prot", "INTEGER", "protection bits (PROT_READ 1, WRITE 2, EXEC 4)"),
    ),
    "file": (
        Column("op", "TEXT", "create | open_write | truncate | rename | unlink | chmod"),
        Column("path", "TEXT", "the file (rename: the old name)"),
        Column("path2", "TEXT", "rename: the new name"),
        Column("open_flags", "INTEGER", "open flags (O_*)"),
        Column("mode", "INTEGER", "file mode (chmod: the new mode)"),
        Column("ino", "INTEGER", "inode, when resolved from an open file"),
    ),
    "network": (
        Column("op", "TEXT", "connect | accept | listen | udp_send | udp_recv | socket"),
        Column("proto", "TEXT", "tcp | udp | icmp | icmpv6 | raw | other protocol number"),
        Column("af", "TEXT", "inet | inet6 | packet | other family number"),
        Column("state", "TEXT", "TCP state when observed"),
        Column("laddr", "TEXT", "local address"),
        Column("lport", "INTEGER", "local port"),
        Column("raddr", "TEXT", "remote address"),
        Column("rport", "INTEGER", "remote port"),
        Column("result", "INTEGER", "syscall result (connect: 0, -errno, -115 in progress)"),
    ),
}


def columns(family: str) -> tuple[Column, ...]:
    return COMMON + FAMILIES[family]
