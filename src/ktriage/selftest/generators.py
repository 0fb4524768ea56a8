"""Behaviour generators: each performs real kernel activity of one family and
prints, as one JSON line on stdout, the facts a sensor must report about it.

Run as ``python -m ktriage.selftest.generators NAME [WORKDIR]``. Generators that
need an address or a pid report it; everything they create lives under
WORKDIR (a fresh temporary directory when omitted) and is removed after.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from ktriage.selftest import security

Facts = dict[str, Any]
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
PROT_READ, PROT_EXEC, MAP_PRIVATE = 1, 4, 2


def process(workdir: str) -> Facts:
    """fork+exec of /bin/sh with argv and cwd, exiting 7; a sleep killed by SIGKILL."""
    argv = ["/bin/sh", "-c", "exit 7", "arg with space"]
    done = subprocess.run(argv, cwd=workdir, check=False)
    victim = security.sleeping_victim()
    victim.kill()
    victim.wait()
    return {"pid": os.getpid(), "argv": argv, "cwd": os.path.realpath(workdir), "status": done.returncode,
            "killed_pid": victim.pid}


def thread(workdir: str) -> Facts:
    """A new thread in this process."""
    seen: dict[str, int] = {}
    t = threading.Thread(target=lambda: seen.setdefault("tid", threading.get_native_id()))
    t.start()
    t.join()
    return {"pid": os.getpid(), "creator_tid": threading.get_native_id(), "new_tid": seen["tid"]}


def image(workdir: str) -> Facts:
    """mmap(PROT_READ|PROT_EXEC) of a file, then exec of /bin/true."""
    path = os.path.join(workdir, "payload.bin")
    with open(path, "wb") as f:
        f.write(b"\xc3" * 8192)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, 8192, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        _libc.munmap(addr, 8192)
    finally:
        os.close(fd)
    child = subprocess.run(["/bin/true"], check=True)
    return {"pid": os.getpid(), "path": path, "addr": addr, "length": 8192, "exec_status": child.returncode}


def file(workdir: str) -> Facts:
    """create, open-for-write, truncate, rename (relative, via a dirfd), chmod +x, unlink; a read-only open."""
    created = os.path.join(workdir, "created.txt")
    os.close(os.open(created, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    os.close(os.open(created, os.O_WRONLY))
    os.close(os.open(created, os.O_WRONLY | os.O_TRUNC))
    os.close(os.open(created, os.O_RDONLY))
    dirfd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rename("created.txt", "renamed.txt", src_dir_fd=dirfd, dst_dir_fd=dirfd)
    finally:
        os.close(dirfd)
    renamed = os.path.join(workdir, "renamed.txt")
    os.chmod(renamed, 0o755)
    os.unlink(renamed)
    return {"pid": os.getpid(), "created": created, "renamed": renamed}


def network(workdir: str) -> Facts:
    """TCP listen/accept/connect on IPv4 and IPv6 loopback, two UDP datagrams, a raw ICMP socket."""
    facts: Facts = {"pid": os.getpid()}
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        facts[f"tcp{family}"] = _tcp_pair(family, host)
    facts["udp"] = _udp_pair()
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    raw.close()
    return facts


def _tcp_pair(family: int, host: str) -> Facts:
    with socket.socket(family, socket.SOCK_STREAM) as server:
        server.bind((host, 0))
        server.listen(1)
        port = server.getsockname()[1]
        with socket.socket(family, socket.SOCK_STREAM) as client:
            client.connect((host, port))
            conn, peer = server.accept()
            conn.close()
            return {"server_port": port, "client_port": client.getsockname()[1], "host": host, "peer": peer[1]}


def _udp_pair() -> Facts:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        tx.sendto(b"one", ("127.0.0.1", port))
        tx.sendto(b"two", ("127.0.0.1", port))
        rx.recvfrom(16)
        rx.recvfrom(16)
        return {"port": port, "sender_port": tx.getsockname()[1]}


def burst(workdir: str) -> Facts:
    """Wait for a line on stdin, then open a file for writing N times (N from argv[3])."""
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
    path = os.path.join(workdir, "burst.txt")
    sys.stdin.readline()
    fd_open, fd_close, flags = os.open, os.close, os.O_WRONLY | os.O_CREAT
    for _ in range(count):
        fd_close(fd_open(path, flags, 0o600))
    return {"pid": os.getpid(), "count": count, "path": path}


def idle(workdir: str) -> Facts:
    """Sleep until killed: a pid for targeting tests."""
    signal.pause()
    return {}


GENERATORS: dict[str, Callable[[str], Facts]] = {
    "process": process, "thread": thread, "image": image, "file": file, "network": network,
    "burst": burst, "idle": idle, **security.GENERATORS,
}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in GENERATORS:
        print(f"usage: generators {{{','.join(GENERATORS)}}} [WORKDIR]", file=sys.stderr)
        return 2
    workdir = argv[2] if len(argv) > 2 else tempfile.mkdtemp(prefix="ktriage-gen-")
    try:
        facts = GENERATORS[argv[1]](workdir)
    finally:
        if len(argv) <= 2:
            shutil.rmtree(workdir, ignore_errors=True)
    facts["time"] = time.time_ns()
    if os.environ.get("KTRIAGE_FACTS"):  # keep stdout clean when it is shared (captures under watch)
        with open(os.environ["KTRIAGE_FACTS"], "w") as f:
            f.write(json.dumps(facts) + "\n")
    else:
        print(json.dumps(facts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
