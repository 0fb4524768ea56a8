"""A thin ctypes layer over the system libbpf (libbpf.so.1).

Only what the sensor needs: open/load/attach objects, size and update maps,
and poll a BPF ring buffer. libbpf's own messages go to the ``ktriage.libbpf``
logger. Failures raise :class:`BpfError` with the libbpf call and errno.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno as errno_mod
import logging
import os
from collections.abc import Callable, Iterator

from ktriage.errors import BpfError, SetupError

log = logging.getLogger("ktriage.libbpf")

_c = ctypes
_vp = _c.c_void_p

RingCallback = _c.CFUNCTYPE(_c.c_int, _vp, _vp, _c.c_size_t)
_PrintFn = _c.CFUNCTYPE(_c.c_int, _c.c_int, _c.c_char_p, _vp)

_SIGNATURES = {
    "bpf_object__open_file": (_vp, [_c.c_char_p, _vp]),
    "bpf_object__load": (_c.c_int, [_vp]),
    "bpf_object__close": (None, [_vp]),
    "bpf_object__next_program": (_vp, [_vp, _vp]),
    "bpf_object__find_map_by_name": (_vp, [_vp, _c.c_char_p]),
    "bpf_object__next_map": (_vp, [_vp, _vp]),
    "bpf_map__name": (_c.c_char_p, [_vp]),
    "bpf_map__type": (_c.c_int, [_vp]),
    "bpf_map__set_pin_path": (_c.c_int, [_vp, _c.c_char_p]),
    "bpf_map_freeze": (_c.c_int, [_c.c_int]),
    "bpf_obj_get": (_c.c_int, [_c.c_char_p]),
    "bpf_map_get_fd_by_id": (_c.c_int, [_c.c_uint32]),
    "bpf_program__fd": (_c.c_int, [_vp]),
    "bpf_link__fd": (_c.c_int, [_vp]),
    "bpf_program__name": (_c.c_char_p, [_vp]),
    "bpf_program__section_name": (_c.c_char_p, [_vp]),
    "bpf_program__set_autoload": (_c.c_int, [_vp, _c.c_bool]),
    "bpf_program__autoload": (_c.c_bool, [_vp]),
    "bpf_program__attach": (_vp, [_vp]),
    "bpf_link__destroy": (_c.c_int, [_vp]),
    "bpf_map__fd": (_c.c_int, [_vp]),
    "bpf_map__set_max_entries": (_c.c_int, [_vp, _c.c_uint32]),
    "bpf_map_update_elem": (_c.c_int, [_c.c_int, _vp, _vp, _c.c_uint64]),
    "bpf_map_lookup_elem": (_c.c_int, [_c.c_int, _vp, _vp]),
    "bpf_map_delete_elem": (_c.c_int, [_c.c_int, _vp]),
    "bpf_map_get_next_key": (_c.c_int, [_c.c_int, _vp, _vp]),
    "ring_buffer__new": (_vp, [_c.c_int, RingCallback, _vp, _vp]),
    "ring_buffer__poll": (_c.c_int, [_vp, _c.c_int]),
    "ring_buffer__consume": (_c.c_int, [_vp]),
    "ring_buffer__free": (None, [_vp]),
    "libbpf_set_print": (_vp, [_PrintFn]),
    "libbpf_num_possible_cpus": (_c.c_int, []),
    "libbpf_major_version": (_c.c_uint32, []),
    "libbpf_minor_version": (_c.c_uint32, []),
}

_lib: ctypes.CDLL | None = None
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [_c.c_char_p, _c.c_size_t, _c.c_char_p, _vp]
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
_quiet = 0  # > 0 while failures are expected (probing): libbpf warnings become debug


@_PrintFn
def _print(level: int, fmt: bytes, args: int) -> int:
    if not log.isEnabledFor(logging.DEBUG if _quiet else _LEVELS.get(level, logging.DEBUG)):
        return 0
    buf = _c.create_string_buffer(2048)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    text = buf.value.decode(errors="replace").rstrip()
    if text:
        log.log(logging.DEBUG if _quiet else _LEVELS.get(level, logging.DEBUG), "%s", text)
    return 0


@contextlib.contextmanager
def expected_failures() -> Iterator[None]:
    """libbpf's warnings are logged at debug level inside this block."""
    global _quiet
    _quiet += 1
    try:
        yield
    finally:
        _quiet -= 1


def lib() -> ctypes.CDLL:
    """The loaded libbpf, with prototypes declared; raises SetupError if absent."""
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            loaded = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise SetupError(f"libbpf not found ({exc}): install the libbpf1 package") from exc
        for fn, (restype, argtypes) in _SIGNATURES.items():
            f = getattr(loaded, fn)
            f.restype, f.argtypes = restype, argtypes
        loaded.libbpf_set_print(_print)
        _lib = loaded
    return _lib


def version() -> str:
    return f"{lib().libbpf_major_version()}.{lib().libbpf_minor_version()}"


def possible_cpus() -> int:
    return lib().libbpf_num_possible_cpus()


def _check(ret: int, what: str) -> int:
    if ret < 0:
        raise BpfError(what, -ret)
    return ret


def _check_ptr(ptr: int | None, what: str) -> int:
    if not ptr:
        raise BpfError(what, _c.get_errno() or errno_mod.EINVAL)
    return ptr


class Map:
    def __init__(self, handle: int, name: str) -> None:
        self.handle = handle
        self.name = name

    @property
    def fd(self) -> int:
        return _check(lib().bpf_map__fd(self.handle), f"bpf_map__fd({self.name})")

    def set_max_entries(self, n: int) -> None:
        _check(lib().bpf_map__set_max_entries(self.handle, n), f"bpf_map__set_max_entries({self.name}, {n})")

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        ret = lib().bpf_map_update_elem(self.fd, key, value, flags)
        if ret < 0:
            raise BpfError(f"bpf_map_update_elem({self.name})", _c.get_errno())

    def delete(self, key: bytes) -> bool:
        return lib().bpf_map_delete_elem(self.fd, key) == 0

    def lookup(self, key: bytes, value_size: int) -> bytes | None:
        return lookup_fd(self.fd, key, value_size)

    def set_pin_path(self, path: str) -> None:
        """Before load: reuse the map pinned at path (bpffs), or create it and pin it there."""
        _check(lib().bpf_map__set_pin_path(self.handle, path.encode()), f"bpf_map__set_pin_path({self.name})")

    def freeze(self) -> None:
        """No more writes from user space, by anyone; BPF programs still write. Idempotent."""
        if fdinfo(self.fd).get("frozen") == "1":
            return
        if lib().bpf_map_freeze(self.fd) < 0:
            raise BpfError(f"bpf_map_freeze({self.name})", _c.get_errno())

    def keys(self, key_size: int, most: int) -> set[bytes]:
        """The map's keys, at most most of them. A key deleted while we walk restarts the kernel's walk
        from the first key: the walk then stops at the first key seen twice, so it can miss some."""
        found: set[bytes] = set()
        prev, key = None, _c.create_string_buffer(key_size)
        while len(found) < most and lib().bpf_map_get_next_key(self.fd, prev, key) == 0:
            if key.raw in found:
                break
            found.add(key.raw)
            prev = _c.create_string_buffer(key.raw, key_size)
        return found


def lookup_fd(fd: int, key: bytes, value_size: int) -> bytes | None:
    out = _c.create_string_buffer(value_size)
    if lib().bpf_map_lookup_elem(fd, key, out) < 0:
        return None
    return out.raw


def fdinfo(fd: int) -> dict[str, str]:
    """The kernel's /proc/self/fdinfo of a BPF object fd (map_id, prog_id, link_id, frozen, …)."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def update_fd(fd: int, key: bytes, value: bytes) -> int:
    """bpf_map_update_elem on a raw fd: 0 or -errno."""
    return 0 if lib().bpf_map_update_elem(fd, key, value, 0) == 0 else -_c.get_errno()


def map_fd_by_id(map_id: int) -> int:
    fd = lib().bpf_map_get_fd_by_id(map_id)
    if fd < 0:
        raise BpfError(f"bpf_map_get_fd_by_id({map_id})", _c.get_errno())
    return fd


def open_pinned(path: str) -> int:
    """An fd of the BPF object pinned at path (bpffs); the caller closes it."""
    fd = lib().bpf_obj_get(path.encode())
    if fd < 0:
        raise BpfError(f"bpf_obj_get({path})", _c.get_errno())
    return fd


class BpfObject:
    """An opened (then loaded) BPF object file and the links it attached."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.handle = _check_ptr(lib().bpf_object__open_file(self.path.encode(), None), f"open {self.path}")
        self.links: dict[str, int] = {}

    def programs(self) -> dict[str, int]:
        out, prog = {}, None
        while True:
            prog = lib().bpf_object__next_program(self.handle, prog)
            if not prog:
                return out
            out[lib().bpf_program__name(prog).decode()] = prog

    def set_autoload(self, wanted: Callable[[str, str], bool]) -> None:
        """Load only the programs for which wanted(name, section) is true."""
        for name, prog in self.programs().items():
            lib().bpf_program__set_autoload(prog, wanted(name, lib().bpf_program__section_name(prog).decode()))

    def map(self, name: str) -> Map:
        handle = lib().bpf_object__find_map_by_name(self.handle, name.encode())
        if not handle:
            raise BpfError(f"map {name} not in {self.path}", errno_mod.ENOENT)
        return Map(handle, name)

    def maps(self) -> list[Map]:
        out, handle = [], None
        while True:
            handle = lib().bpf_object__next_map(self.handle, handle)
            if not handle:
                return out
            out.append(Map(handle, lib().bpf_map__name(handle).decode()))

    def program_fds(self) -> dict[str, int]:
        """Loaded programs only."""
        fds = {name: lib().bpf_program__fd(prog) for name, prog in self.programs().items()}
        return {name: fd for name, fd in fds.items() if fd >= 0}

    def link_fds(self) -> dict[str, int]:
        return {name: _check(lib().bpf_link__fd(link), f"bpf_link__fd({name})") for name, link in self.links.items()}

    def load(self) -> None:
        _check(lib().bpf_object__load(self.handle), f"load {os.path.basename(self.path)}")

    def attach(self, name: str) -> None:
        prog = self.programs()[name]
        self.links[name] = _check_ptr(lib().bpf_program__attach(prog), f"attach {name}")

    def attach_loaded(self) -> None:
        for name, prog in self.programs().items():
            if lib().bpf_program__autoload(prog):
                self.attach(name)

    def detach(self) -> None:
        """Detach every program: nothing more is sent (the maps and the ring stay readable)."""
        for link in self.links.values():
            lib().bpf_link__destroy(link)
        self.links.clear()

    def close(self) -> None:
        self.detach()
        if self.handle:
            lib().bpf_object__close(self.handle)
            self.handle = 0


class RingBuffer:
    """Polls a BPF ring buffer; each record is copied out as bytes into a batch."""

    def __init__(self, ring: Map) -> None:
        self.batch: list[bytes] = []
        append, string_at = self.batch.append, _c.string_at

        def on_record(_ctx: int, data: int, size: int) -> int:
            append(string_at(data, size))
            return 0

        self._callback = RingCallback(on_record)  # kept alive as long as the ring
        self.handle = _check_ptr(lib().ring_buffer__new(ring.fd, self._callback, None, None), "ring_buffer__new")

    def poll(self, timeout_ms: int) -> list[bytes]:
        """Every record available; when there is none, first wait up to timeout_ms for a wakeup (the
        kernel does not announce every record: see emit_record in bpf/common.h). Records already
        there are returned at once: a wakeup for them may have been spent, and waiting for the
        next would hold a record that completes a detection until then."""
        self._consume()
        if not self.batch:
            ret = lib().ring_buffer__poll(self.handle, timeout_ms)  # consumes what the wakeup announced
            if ret < 0 and -ret != errno_mod.EINTR:
                raise BpfError("ring_buffer__poll", -ret)
        out = self.batch[:]
        self.batch.clear()
        return out

    def _consume(self) -> None:
        ret = lib().ring_buffer__consume(self.handle)
        if ret < 0:
            raise BpfError("ring_buffer__consume", -ret)

    def close(self) -> None:
        if self.handle:
            lib().ring_buffer__free(self.handle)
            self.handle = 0
