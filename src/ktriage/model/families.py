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
    Column("event_id", "INTEGER", "Windows: the log's EventID (Sysmon 1, 10 …); NULL for the Linux sensor"),
    Column("unfit", "TEXT", "values that did not fit their column's type (a 100-bit number, text for a pid), "
                            "kept as text: a JSON object column -> text; else NULL"),
)

# Where a sensitive syscall came from (access, memory, module, api).
ORIGIN = (
    Column("origin_ip", "INTEGER", "user instruction pointer after the syscall"),
    Column("origin_class", "TEXT", "mapping behind it: libc | ldso | vdso | exe | file | anon | none"),
    Column("origin_module", "TEXT", "origin as module+offset"),
    Column("origin_path", "TEXT", "the mapped file, for class 'file'"),
    Column("origin_start", "INTEGER", "start of the mapping behind the origin"),
    Column("origin_end", "INTEGER", "end of that mapping"),
    Column("origin_prot", "TEXT", "its protection, rwx"),
    Column("origin_sp", "INTEGER", "user stack pointer"),
    Column("sample", "TEXT", "hex of up to 64 bytes around an anonymous origin"),
    Column("sample_entropy", "REAL", "Shannon entropy of the sample, bits per byte"),
    Column("stack", "TEXT", "user frames as a JSON list of [address, module+offset]"),
    Column("stack_anomaly", "TEXT", "why the stack looks forged (sp outside a stack, a frame in anonymous code), else NULL"),
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
        Column("ld_env", "TEXT", "exec: the LD_* environment variables (LD_PRELOAD, LD_AUDIT …), JSON, else NULL"),
        Column("child_pid", "INTEGER", "fork: the new process"),
        Column("exit_status", "INTEGER", "exit: exit status, when it exited normally"),
        Column("exit_signal", "INTEGER", "exit: terminating signal, when killed"),
        Column("account", "TEXT", "Windows: the account"),
        Column("guid", "TEXT", "Windows: Sysmon ProcessGuid"),
        Column("tamper_type", "TEXT", "Windows (Sysmon 25): the process tampering type"),
    ),
    "thread": (
        Column("action", "TEXT", "create | remote_create (Windows: Sysmon 8)"),
        Column("new_tid", "INTEGER", "the new task; tid is the creating task"),
        Column("target_pid", "INTEGER", "Windows: process the thread was created in"),
        Column("target_image", "TEXT", "Windows: its executable"),
        Column("start_address", "INTEGER", "Windows: the thread's start address"),
        Column("start_module", "TEXT", "Windows: module of the start address (NULL: no module backs it)"),
        Column("start_function", "TEXT", "Windows: function at the start address"),
    ),
    "image": (
        Column("how", "TEXT", "exec (the binary) | interp (its loader) | mmap (PROT_EXEC file mapping)"),
        Column("path", "TEXT", "mapped file"),
        Column("start", "INTEGER", "first address of the executable range"),
        Column("end", "INTEGER", "end address (exclusive)"),
        Column("pgoff", "INTEGER", "file offset of the mapping, pages (mmap: bytes)"),
        Column("ino", "INTEGER", "inode of the mapped file"),
        Column("prot", "INTEGER", "protection bits (PROT_READ 1, WRITE 2, EXEC 4)"),
        Column("signed", "INTEGER", "Windows: 1 when the image is signed"),
        Column("signature", "TEXT", "Windows: signer"),
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
        Column("direction", "INTEGER", "Windows: 1 when this host initiated the connection"),
        Column("account", "TEXT", "Windows: the account"),
    ),
    "access": (
        Column("op", "TEXT", "ptrace | vm_readv | vm_writev | proc_mem | pidfd_open | pidfd_getfd"),
        Column("request", "TEXT", "ptrace request name (PTRACE_POKETEXT …)"),
        Column("rights", "TEXT", "MEM_READ|MEM_WRITE|REGS_READ|REGS_WRITE|ATTACH|CONTROL|FD_STEAL"),
        Column("rights_mask", "INTEGER", "the rights as bits"),
        Column("target_pid", "INTEGER", "process acted on"),
        Column("target_tid", "INTEGER", "thread acted on (ptrace)"),
        Column("target_image", "TEXT", "executable of the target"),
        Column("target_ppid", "INTEGER", "parent of the target (is it the actor's child?)"),
        Column("target_is_sensor", "INTEGER", "1 when the target is the ktriage sensor itself"),
        Column("addr", "INTEGER", "target address (ptrace addr, first remote iovec, …)"),
        Column("data", "INTEGER", "ptrace data word"),
        Column("new_ip", "INTEGER", "PTRACE_SETREGS/SETREGSET: instruction pointer written into the target"),
        Column("new_ip_module", "TEXT", "where new_ip points in the target, module+offset or [anon …]"),
        Column("bytes", "INTEGER", "bytes transferred (process_vm_*)"),
        Column("count", "INTEGER", "iovec count, or the fd taken by pidfd_getfd"),
        Column("open_flags", "INTEGER", "proc_mem: open flags"),
        Column("own", "INTEGER", "proc_mem: 1 when a process opened its own memory"),
        Column("result", "INTEGER", "0 or -errno"),
    ) + ORIGIN,
    "memory": (
        Column("op", "TEXT", "mmap | mprotect | memfd_create"),
        Column("addr", "INTEGER", "region start"),
        Column("length", "INTEGER", "region length"),
        Column("prot", "TEXT", "new protection, rwx"),
        Column("old_prot", "TEXT", "mprotect: protection before, rwx"),
        Column("anon", "INTEGER", "1 when the region is anonymous memory"),
        Column("name", "TEXT", "memfd name, or the file mapped"),
        Column("mmap_flags", "INTEGER", "mmap flags / memfd_create flags"),
        Column("fd", "INTEGER", "file descriptor (mmap of a file, memfd created)"),
        Column("result", "INTEGER", "0 or -errno"),
    ) + ORIGIN,
    "module": (
        Column("op", "TEXT", "init_module | finit_module | delete_module | module_load | bpf_prog_load"
                            " | bpf_<command> on ktriage's own BPF objects (bpf_map_update_elem, bpf_link_detach …)"),
        Column("name", "TEXT", "module name, or BPF program name"),
        Column("path", "TEXT", "finit_module: the module file"),
        Column("length", "INTEGER", "init_module: image length"),
        Column("prog_type", "INTEGER", "bpf_prog_load: BPF program type"),
        Column("insn_cnt", "INTEGER", "bpf_prog_load: instructions"),
        Column("flags", "INTEGER", "syscall flags (taints for module_load)"),
        Column("result", "INTEGER", "0, a BPF program fd, or -errno (refused attempts count)"),
        Column("target_is_sensor", "INTEGER", "bpf_<command>: 1, the BPF object acted on is ktriage's own"),
        Column("bpf_object", "TEXT", "bpf_<command>: the object's kind and kernel id (map 704); name is its name"),
        Column("signed", "INTEGER", "Windows (Sysmon 6): 1 when the driver is signed"),
        Column("signature", "TEXT", "Windows: driver signer"),
        Column("signature_status", "TEXT", "Windows: Valid, Expired …"),
        Column("service_type", "TEXT", "Windows (System 7045): service type"),
        Column("account", "TEXT", "Windows: the account"),
    ) + ORIGIN,
    "api": (
        Column("op", "TEXT", "setuid | setgid | setreuid | setregid | setresuid | setresgid | setfsuid | setfsgid | capset"
                            " | script_block (Windows PowerShell 4104)"),
        Column("args", "TEXT", "the requested ids, JSON; script_block: the script text"),
        Column("path", "TEXT", "script_block: the script's path"),
        Column("old_uid", "INTEGER", "real uid before"),
        Column("new_uid", "INTEGER", "real uid after"),
        Column("old_euid", "INTEGER", "effective uid before"),
        Column("new_euid", "INTEGER", "effective uid after"),
        Column("old_gid", "INTEGER", "real gid before"),
        Column("new_gid", "INTEGER", "real gid after"),
        Column("ids_before", "TEXT", "uid euid suid fsuid gid egid sgid fsgid before, JSON"),
        Column("ids_after", "TEXT", "the same after"),
        Column("caps_before", "TEXT", "effective capabilities before, hex"),
        Column("caps_after", "TEXT", "effective capabilities after, hex"),
        Column("caps_gained", "INTEGER", "1 when effective capabilities were added"),
        Column("result", "INTEGER", "0 or -errno"),
    ) + ORIGIN,
    "signal": (
        Column("op", "TEXT", "kill | tkill | tgkill | pidfd_send_signal"),
        Column("signal", "INTEGER", "signal number"),
        Column("signal_name", "TEXT", "SIGKILL …"),
        Column("target_pid", "INTEGER", "process signalled (negative: a process group)"),
        Column("target_tid", "INTEGER", "thread signalled (tkill, tgkill)"),
        Column("target_image", "TEXT", "executable of the target"),
        Column("target_ppid", "INTEGER", "parent of the target"),
        Column("target_is_sensor", "INTEGER", "1 when the target is the ktriage sensor itself"),
        Column("result", "INTEGER", "0 or -errno"),
    ),
    "registry": (
        Column("op", "TEXT", "Windows (Sysmon 12/13/14): CreateKey | DeleteKey | SetValue | DeleteValue | RenameKey"),
        Column("key", "TEXT", "the key or value path"),
        Column("value", "TEXT", "SetValue: the data written"),
        Column("new_name", "TEXT", "RenameKey: the new name"),
    ),
    "detection": (
        Column("name", "TEXT", "detection name (the seed's where the behaviour is the same)"),
        Column("severity", "INTEGER", "1-10: 2 info, 3-4 weak, 5-6 suspicious chain, 7 strong, 8 strongest"),
        Column("actor_pid", "INTEGER", "the process that acted"),
        Column("target_pid", "INTEGER", "the process acted on, when there is one"),
        Column("target_image", "TEXT", "executable of the target"),
        Column("flags", "INTEGER", "number of events in the chain"),
        Column("access_mask", "INTEGER", "union of the rights of the access events in the chain"),
        Column("age_ms", "INTEGER", "time from the first to the last event of the chain"),
        Column("reason", "TEXT", "why it fired"),
        Column("technique", "TEXT", "MITRE ATT&CK technique ids, comma-separated"),
        Column("seed_name", "TEXT", "the Sleepwalker detection this corresponds to"),
        Column("rule", "TEXT", "the rule that emitted it"),
        Column("event_ids", "TEXT", "JSON list of the ids (family/source#seq) of the events behind it"),
        Column("evidence", "TEXT", "JSON list of [step or mark, event id]"),
        Column("trigger_id", "TEXT", "id of the event that completed it"),
    ),
}


def columns(family: str) -> tuple[Column, ...]:
    return COMMON + FAMILIES[family]


# The Linux kernel sensor's streams, in the order of their bit in its configuration (the
# KT_FAM_* of bpf/): every family but the Windows-only registry and the derived detection.
KERNEL_FAMILIES = tuple(f for f in FAMILIES if f not in ("registry", "detection"))
