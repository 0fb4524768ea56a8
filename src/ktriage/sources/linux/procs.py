"""Process table: the executable path of every live process, for enrichment.

Seeded from /proc at start, then kept current from the event stream itself
(exec sets, fork inherits, exit forgets), so short-lived processes are named
even after they are gone. A miss falls back to /proc/PID/exe once.
"""

from __future__ import annotations

import os


def read_exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def read_ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2 :].split()[1])


def _stat_fields(pid: int) -> list[bytes] | None:
    """/proc/PID/stat after the command name: field 3 (state) first."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()


def state_and_start(pid: int) -> tuple[str, int] | None:
    """The process state letter (R, S, T stopped, t traced, Z …) and its start time (clock ticks after
    boot: with the pid, it names one process); None when there is no such process."""
    fields = _stat_fields(pid)
    return (fields[0].decode(), int(fields[19])) if fields else None


def is_same_process(pid: int, start: int) -> bool:
    found = state_and_start(pid)
    return found is not None and found[1] == start and found[0] != "Z"


class ProcessTable:
    def __init__(self) -> None:
        self.images: dict[int, str] = {}
        self.parents: dict[int, int] = {}

    def seed_from_proc(self) -> None:
        for name in os.listdir("/proc"):
            if name.isdigit():
                exe = read_exe(int(name))
                if exe:
                    self.images[int(name)] = exe

    def image(self, pid: int) -> str:
        found = self.images.get(pid)
        if found is None:
            found = self.images[pid] = read_exe(pid)
        return found

    def on_exec(self, pid: int, path: str) -> None:
        self.images[pid] = path

    def parent(self, pid: int) -> int | None:
        found = self.parents.get(pid)
        if found is None:
            found = read_ppid(pid)
            if found is not None:
                self.parents[pid] = found
        return found

    def on_fork(self, parent: int, child: int) -> None:
        self.images[child] = self.image(parent)
        self.parents[child] = parent

    def on_exit(self, pid: int) -> None:
        self.images.pop(pid, None)
        self.parents.pop(pid, None)


def children_map() -> dict[int, list[int]]:
    """Every live process's children, from one walk of /proc: ppid -> pids."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        ppid = read_ppid(int(name)) if name.isdigit() else None
        if ppid is not None:
            children.setdefault(ppid, []).append(int(name))
    return children


def _below(children: dict[int, list[int]], roots: set[int], depth: int) -> dict[int, int]:
    found, todo = dict.fromkeys(roots, 0), list(roots)
    while todo:
        parent = todo.pop()
        if found[parent] >= depth:
            continue
        for child in children.get(parent, ()):
            if child not in found:
                found[child] = found[parent] + 1
                todo.append(child)
    return found


def descendants(roots: set[int]) -> dict[int, int]:
    """The given pids and every live process below them, from /proc: pid -> generation."""
    return _below(children_map(), roots, 1 << 62)


def trees(roots: list[int], depth: int) -> dict[int, dict[int, int]]:
    """For each root, itself and the live processes at most depth generations below it (pid -> generation),
    from one walk of /proc whatever the number of roots."""
    children = children_map()
    return {root: _below(children, {root}, depth) for root in roots}


def tgid_of(tid: int) -> int:
    """The process a thread id belongs to (the tid itself when unknown)."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            lines = [line for line in f if line.startswith(b"Tgid:")]
    except OSError:
        return tid
    return int(lines[0].split()[1]) if lines else tid
