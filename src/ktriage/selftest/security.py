"""Security behaviour generators: real cross-process access, executable
memory, module and BPF loads, privilege changes and signals. Each is harmless:
memory written into a victim is written back with what was there, victims
are killed after, and nothing outside the work directory is changed.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import subprocess
import time
from typing import Any

Facts = dict[str, Any]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.process_vm_readv.restype = ctypes.c_ssize_t
libc.process_vm_writev.restype = ctypes.c_ssize_t

PROT_R, PROT_W, PROT_X = 1, 2, 4
MAP_PRIVATE_ANON = 0x02 | 0x20
PAGE = 4096
PTRACE_PEEKTEXT, PTRACE_POKETEXT, PTRACE_GETREGS, PTRACE_SETREGS = 1, 4, 12, 13
PTRACE_ATTACH, PTRACE_DETACH, PTRACE_CONT = 16, 17, 7
_X86 = platform.machine() == "x86_64"
SYS = {"finit_module": 313, "pidfd_getfd": 438, "bpf": 321} if _X86 else {"finit_module": 273, "pidfd_getfd": 438,
                                                                         "bpf": 280}


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _check(ret: int, what: str) -> int:
    if ret == -1 or ret is None:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _wait_sleeping(pid: int) -> None:
    """Wait until pid runs /bin/sleep and sleeps in it: its exec is complete."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            with open(f"/proc/{pid}/wchan") as f:
                wchan = f.read()
        except OSError:
            exe = wchan = ""
        if exe.endswith("sleep") and "nanosleep" in wchan:
            return
        time.sleep(0.01)
    raise TimeoutError(f"process {pid} did not start sleeping")


def sleeping_victim() -> subprocess.Popen:
    """A sleeping /bin/sleep, our child."""
    victim = subprocess.Popen(["/bin/sleep", "60"])
    _wait_sleeping(victim.pid)
    return victim


def _region(pid: int, perms: str) -> int:
    """Start of the first mapping of pid with these permissions (e.g. 'r-xp')."""
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split()
            if fields[1] == perms:
                return int(fields[0].split("-")[0], 16)
    raise LookupError(f"no {perms} mapping in process {pid}")


def _end(victim: subprocess.Popen) -> None:
    victim.kill()
    victim.wait()


def _orphan_sleeper() -> int:
    """A sleeping process that is not our child (its parent exits at once)."""
    out = subprocess.run(["/bin/sh", "-c", "/bin/sleep 60 >/dev/null 2>&1 & echo $!"], capture_output=True,
                         text=True, check=True)
    pid = int(out.stdout)
    _wait_sleeping(pid)
    return pid


# x86-64: push 60; pop rax; xor edi, edi; syscall; nop — exit(0), one word
EXIT_SHELLCODE = int.from_bytes(b"\x6a\x3c\x58\x31\xff\x0f\x05\x90", "little")
REG_ORIG_RAX, REG_RIP = 15, 16  # indexes in struct user_regs_struct


def _inject_exit(pid: int) -> int:
    """Write exit(0) at the stopped pid's instruction pointer and point it there (no syscall restart)."""
    regs = (ctypes.c_uint64 * 27)()
    _check(libc.ptrace(PTRACE_GETREGS, pid, None, regs), "GETREGS")
    rip = regs[REG_RIP]
    ctypes.set_errno(0)
    libc.ptrace(PTRACE_PEEKTEXT, pid, ctypes.c_void_p(rip), None)
    _check(libc.ptrace(PTRACE_POKETEXT, pid, ctypes.c_void_p(rip), ctypes.c_void_p(EXIT_SHELLCODE)), "POKETEXT")
    regs[REG_ORIG_RAX] = 0xFFFFFFFFFFFFFFFF  # not in a syscall: the kernel must not restart one
    _check(libc.ptrace(PTRACE_SETREGS, pid, None, regs), "SETREGS")
    return rip


def thread_hijack(workdir: str) -> Facts:
    """Attach to a process that is not ours, write exit(0) at its instruction pointer, set its
    registers to run it, detach: it runs the injected code and exits."""
    if not _X86:
        raise NotImplementedError("thread_hijack writes x86-64 machine code")
    pid = _orphan_sleeper()
    _check(libc.ptrace(PTRACE_ATTACH, pid, None, None), "PTRACE_ATTACH")
    os.waitpid(pid, 0)
    rip = _inject_exit(pid)
    _check(libc.ptrace(PTRACE_DETACH, pid, None, None), "DETACH")
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.01)
    ran = not os.path.exists(f"/proc/{pid}")
    if not ran:
        os.kill(pid, signal.SIGKILL)
        raise RuntimeError(f"the injected code did not run in {pid}")
    return {"pid": os.getpid(), "target": pid, "addr": rip, "injected_code_ran": ran}


def hollow_child(workdir: str) -> Facts:
    """Hollowing: spawn a child stopped at its exec (TRACEME), replace the code at its entry with
    exit(0) and point its registers there, let it run: it exits 0 instead of sleeping."""
    if not _X86:
        raise NotImplementedError("hollow_child writes x86-64 machine code")
    pid = os.fork()
    if pid == 0:
        libc.ptrace(0, 0, None, None)  # PTRACE_TRACEME: stop at exec
        os.execv("/bin/sleep", ["sleep", "60"])
    os.waitpid(pid, 0)
    rip = _inject_exit(pid)
    _check(libc.ptrace(PTRACE_CONT, pid, None, None), "PTRACE_CONT")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the hollowed child ended with status {status:#x}")
    return {"pid": os.getpid(), "child": pid, "addr": rip, "exit_status": 0}


def ptrace_inject(workdir: str) -> Facts:
    """Attach to a victim, peek and poke (the same word) into its text, get and set its registers, detach."""
    victim = sleeping_victim()
    pid = victim.pid
    try:
        addr = _region(pid, "r-xp")
        _check(libc.ptrace(PTRACE_ATTACH, pid, None, None), "PTRACE_ATTACH")
        os.waitpid(pid, 0)
        ctypes.set_errno(0)
        word = libc.ptrace(PTRACE_PEEKTEXT, pid, ctypes.c_void_p(addr), None)
        _check(libc.ptrace(PTRACE_POKETEXT, pid, ctypes.c_void_p(addr), ctypes.c_void_p(word)), "POKETEXT")
        regs = ctypes.create_string_buffer(27 * 8)
        _check(libc.ptrace(PTRACE_GETREGS, pid, None, regs), "GETREGS")
        _check(libc.ptrace(PTRACE_SETREGS, pid, None, regs), "SETREGS")
        _check(libc.ptrace(PTRACE_DETACH, pid, None, None), "DETACH")
    finally:
        _end(victim)
    return {"pid": os.getpid(), "target": pid, "addr": addr}


def vm_writev(workdir: str) -> Facts:
    """process_vm_readv then process_vm_writev of the same 16 bytes into a victim's writable memory."""
    victim = sleeping_victim()
    pid = victim.pid
    try:
        addr = _region(pid, "rw-p")
        buf = ctypes.create_string_buffer(16)
        local, remote = IoVec(ctypes.cast(buf, ctypes.c_void_p), 16), IoVec(addr, 16)
        _check(libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0), "process_vm_readv")
        wrote = _check(libc.process_vm_writev(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0),
                       "process_vm_writev")
    finally:
        _end(victim)
    return {"pid": os.getpid(), "target": pid, "addr": addr, "bytes": wrote}


def proc_mem(workdir: str) -> Facts:
    """Write a victim's memory through /proc/PID/mem (the same bytes back); read our own."""
    victim = sleeping_victim()
    pid = victim.pid
    try:
        addr = _region(pid, "rw-p")
        fd = os.open(f"/proc/{pid}/mem", os.O_RDWR)
        try:
            data = os.pread(fd, 16, addr)
            os.pwrite(fd, data, addr)
        finally:
            os.close(fd)
        own = os.open("/proc/self/mem", os.O_RDONLY)
        os.close(own)
    finally:
        _end(victim)
    return {"pid": os.getpid(), "target": pid, "addr": addr}


def _anon(size: int, prot: int) -> int:
    addr = libc.mmap(None, size, prot, MAP_PRIVATE_ANON, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap failed")
    return addr


def wx_memory(workdir: str) -> Facts:
    """Anonymous memory written then made executable: mmap RW, mprotect RX."""
    addr = _anon(PAGE, PROT_R | PROT_W)
    ctypes.memset(addr, 0xC3, PAGE)
    _check(libc.mprotect(addr, PAGE, PROT_R | PROT_X), "mprotect")
    return {"pid": os.getpid(), "addr": addr, "length": PAGE}


def exec_rewrite(workdir: str) -> Facts:
    """Code patched in place: RW -> RX, RX -> RW (both reported), then RW -> R (neither exec nor
    write: not reported); last, a second page made RX marks the end."""
    addr, marker = _anon(PAGE, PROT_R | PROT_W), _anon(PAGE, PROT_R | PROT_W)
    for prot in (PROT_R | PROT_X, PROT_R | PROT_W, PROT_R):
        _check(libc.mprotect(addr, PAGE, prot), "mprotect")
    _check(libc.mprotect(marker, PAGE, PROT_R | PROT_X), "mprotect marker")
    return {"pid": os.getpid(), "addr": addr, "marker": marker}


def _shellcode(target: int) -> bytes:
    """x86-64: mprotect(target, 4096, PROT_READ|PROT_EXEC) with a raw syscall instruction; ret."""
    return (b"\x48\xbf" + target.to_bytes(8, "little")  # mov rdi, target
            + b"\xbe\x00\x10\x00\x00"  # mov esi, 4096
            + b"\xba\x05\x00\x00\x00"  # mov edx, 5
            + b"\xb8\x0a\x00\x00\x00"  # mov eax, 10 (mprotect)
            + b"\x0f\x05\xc3")  # syscall; ret


def direct_syscall(workdir: str) -> Facts:
    """The same mprotect issued from anonymous shellcode (a direct syscall) and through libc."""
    if not _X86:
        raise NotImplementedError("direct_syscall generator is written for x86-64")
    code, target = _anon(PAGE, PROT_R | PROT_W), _anon(PAGE, PROT_R | PROT_W)
    blob = _shellcode(target)
    ctypes.memmove(code, blob, len(blob))
    _check(libc.mprotect(code, PAGE, PROT_R | PROT_X), "mprotect code")
    ret = ctypes.CFUNCTYPE(ctypes.c_long)(code)()
    if ret != 0:
        raise OSError(-ret, "shellcode mprotect failed")
    _check(libc.mprotect(target, PAGE, PROT_R | PROT_X), "libc mprotect")
    return {"pid": os.getpid(), "code": code, "code_end": code + PAGE, "target": target,
            "syscall_ip": code + len(blob) - 1}


def stack_pivot(workdir: str) -> Facts:
    """x86-64 shellcode that moves the stack pointer into its own RWX page, issues mprotect with a raw
    syscall, and moves it back."""
    if not _X86:
        raise NotImplementedError("stack_pivot generator is written for x86-64")
    page, target = _anon(PAGE, PROT_R | PROT_W | PROT_X), _anon(PAGE, PROT_R | PROT_W)
    pivot = page + PAGE - 64
    code = (b"\x48\x89\xe0"  # mov rax, rsp
            + b"\x48\xbc" + pivot.to_bytes(8, "little")  # mov rsp, pivot
            + b"\x50"  # push rax
            + _shellcode(target)[:-1]  # mprotect(target, 4096, r-x) via syscall, without its ret
            + b"\x5c\xc3")  # pop rsp; ret
    ctypes.memmove(page, code, len(code))
    ret = ctypes.CFUNCTYPE(ctypes.c_long)(page)()
    if ret != 0:
        raise OSError(-ret, "pivoted mprotect failed")
    return {"pid": os.getpid(), "page": page, "pivot": pivot, "target": target}


def memfd_exec(workdir: str) -> Facts:
    """Copy /bin/true into a memfd and execute it from there (fexecve)."""
    fd = os.memfd_create("ktriage-memfd", 0)
    with open("/bin/true", "rb") as src:
        os.write(fd, src.read())
    pid = os.fork()
    if pid == 0:
        try:
            os.execve(fd, ["ktriage-memfd"], {})
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return {"pid": os.getpid(), "child": pid, "name": "ktriage-memfd", "status": os.waitstatus_to_exitcode(status)}


def finit_module(workdir: str) -> Facts:
    """Ask the kernel to load a file that is not a module: refused, but an attempt."""
    fd = os.open("/bin/true", os.O_RDONLY)
    try:
        ret = libc.syscall(SYS["finit_module"], fd, b"", 0)
        err = ctypes.get_errno() if ret == -1 else 0
    finally:
        os.close(fd)
    return {"pid": os.getpid(), "result": -err, "errno": err}


def setuid(workdir: str) -> Facts:
    """A child drops root to nobody with setuid."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(65534)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return {"pid": os.getpid(), "child": pid, "uid": 65534}


def signals(workdir: str) -> Facts:
    """kill(SIGTERM) to one victim; pidfd_open, pidfd_getfd and pidfd_send_signal(SIGKILL) to another."""
    first, second = sleeping_victim(), sleeping_victim()
    os.kill(first.pid, signal.SIGTERM)
    first.wait()
    pidfd = os.pidfd_open(second.pid)
    stolen = libc.syscall(SYS["pidfd_getfd"], pidfd, 0, 0)
    if stolen >= 0:
        os.close(stolen)
    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    os.close(pidfd)
    second.wait()
    return {"pid": os.getpid(), "killed": first.pid, "pidfd_target": second.pid, "getfd_ok": stolen >= 0}


def bpf_load(workdir: str) -> Facts:
    """Load a two-instruction socket filter through bpf(BPF_PROG_LOAD)."""
    insns = (ctypes.c_uint64 * 2)(0x00000000000000B7, 0x0000000000000095)  # r0 = 0; exit
    license = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(128)
    ctypes.c_uint32.from_buffer(attr, 0).value = 1  # BPF_PROG_TYPE_SOCKET_FILTER
    ctypes.c_uint32.from_buffer(attr, 4).value = 2
    ctypes.c_uint64.from_buffer(attr, 8).value = ctypes.addressof(insns)
    ctypes.c_uint64.from_buffer(attr, 16).value = ctypes.addressof(license)
    attr[48:59] = b"kt_selftest"
    fd = _check(libc.syscall(SYS["bpf"], 5, attr, 128), "bpf(BPF_PROG_LOAD)")
    os.close(fd)
    return {"pid": os.getpid(), "name": "kt_selftest"}


def deleted_exec(workdir: str) -> Facts:
    """Copy /bin/true, keep it open, delete it, execute it through /proc/self/fd."""
    path = os.path.join(workdir, "vanishing")
    with open("/bin/true", "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    os.chmod(path, 0o755)
    fd = os.open(path, os.O_RDONLY)
    os.unlink(path)
    child = subprocess.run([f"/proc/self/fd/{fd}"], pass_fds=(fd,), check=False)
    os.close(fd)
    return {"pid": os.getpid(), "path": path, "status": child.returncode}


def preload(workdir: str) -> Facts:
    """Run a program with LD_PRELOAD of a real library, and open /etc/ld.so.preload for writing without
    changing it (appending nothing; created empty and removed if it did not exist)."""
    lib = "/usr/lib/x86_64-linux-gnu/libm.so.6" if _X86 else "/usr/lib/aarch64-linux-gnu/libm.so.6"
    child = subprocess.run(["/bin/true"], env={"LD_PRELOAD": lib, "PATH": "/usr/bin:/bin"}, check=False)
    existed = os.path.exists("/etc/ld.so.preload")
    os.close(os.open("/etc/ld.so.preload", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    if not existed:
        os.unlink("/etc/ld.so.preload")
    return {"pid": os.getpid(), "library": lib, "status": child.returncode, "preload_existed": existed}


def persistence(workdir: str) -> Facts:
    """Drop a comment-only cron file and profile script, then remove them."""
    written = []
    for path in ("/etc/cron.d/ktriage-selftest", "/etc/profile.d/ktriage-selftest.sh"):
        if not os.path.isdir(os.path.dirname(path)):
            continue
        with open(path, "x") as f:
            f.write("# ktriage selftest: persistence-write detection check; removed at once\n")
        os.unlink(path)
        written.append(path)
    return {"pid": os.getpid(), "paths": written}


def escalate(workdir: str) -> Facts:
    """A child drops its effective uid to nobody and takes root back (saved uid 0): euid 65534 -> 0."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setresuid(-1, 65534, -1)
            os.setresuid(-1, 0, -1)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return {"pid": os.getpid(), "child": pid}


def tamper(workdir: str) -> Facts:
    """Stop and continue the ktriage sensor (pid in KTRIAGE_SENSOR_PID) and peek at its /proc/PID/mem."""
    sensor = int(os.environ["KTRIAGE_SENSOR_PID"])
    os.kill(sensor, signal.SIGSTOP)
    os.kill(sensor, signal.SIGCONT)
    os.close(os.open(f"/proc/{sensor}/mem", os.O_RDONLY))
    return {"pid": os.getpid(), "sensor": sensor}


def _sensor_cfg_id(sensor: int) -> int:
    """The id of the sensor's kt_cfg: the one-entry array map of kt_config's size, in its fdinfo."""
    from ktriage.sensor.layouts import CONFIG_STRUCT

    for fd in os.listdir(f"/proc/{sensor}/fdinfo"):
        with open(f"/proc/{sensor}/fdinfo/{fd}") as f:
            info = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        if (info.get("map_type"), info.get("value_size"), info.get("max_entries")) == ("2", str(CONFIG_STRUCT.size), "1"):
            return int(info["map_id"])
    raise LookupError(f"no kt_cfg map held by process {sensor}")


def bpf_tamper(workdir: str) -> Facts:
    """Open the sensor's kt_cfg by id, read it and write the same bytes back (harmless even if the
    write went through; it must be refused: the map is frozen)."""
    from ktriage.sensor.layouts import CONFIG_STRUCT
    from ktriage.sensor.libbpf import lookup_fd, map_fd_by_id, update_fd

    fd = map_fd_by_id(_sensor_cfg_id(int(os.environ["KTRIAGE_SENSOR_PID"])))
    try:
        key = (0).to_bytes(4, "little")
        value = lookup_fd(fd, key, CONFIG_STRUCT.size)
        result = update_fd(fd, key, value) if value is not None else None
    finally:
        os.close(fd)
    if result == 0:
        raise RuntimeError("the sensor's kt_cfg accepted a write: it is not frozen")
    return {"pid": os.getpid(), "result": result}


GENERATORS = {"bpf_tamper": bpf_tamper, "stack_pivot": stack_pivot, "thread_hijack": thread_hijack, "hollow_child": hollow_child, "deleted_exec": deleted_exec,
              "preload": preload, "persistence": persistence, "escalate": escalate, "tamper": tamper,
              "ptrace_inject": ptrace_inject, "vm_writev": vm_writev, "proc_mem": proc_mem, "wx_memory": wx_memory,
              "exec_rewrite": exec_rewrite,
              "direct_syscall": direct_syscall, "memfd_exec": memfd_exec, "finit_module": finit_module,
              "setuid": setuid, "signals": signals, "bpf_load": bpf_load}
