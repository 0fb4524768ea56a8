"""Compile the CO-RE BPF programs against the running kernel's BTF.

``vmlinux.h`` is generated with bpftool once per kernel build (keyed by a hash
of the BTF blob); objects are cached per (kernel, sources, layouts) and rebuilt
when any of them changes. Missing prerequisites raise SetupError with one line
saying what to install.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from ktriage.errors import SetupError
from ktriage.sensor import layouts
from ktriage.trust import private_dir

_ARCH = {"x86_64": "x86", "aarch64": "arm64"}
LIBBPF_HEADERS = Path("/usr/include/bpf/bpf_helpers.h")


def btf_path() -> Path:
    return Path(os.environ.get("KTRIAGE_BTF", "/sys/kernel/btf/vmlinux"))


def cache_dir() -> Path:
    """Where compiled objects are kept: private, since what is there is loaded into the kernel."""
    if "KTRIAGE_CACHE" in os.environ:
        path = Path(os.environ["KTRIAGE_CACHE"])
    elif os.geteuid() == 0:
        path = Path("/var/cache/ktriage")
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ktriage"
    return private_dir(path, "the BPF object cache")


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        raise SetupError(f"{name} not found: install the {package} package")
    return found


def _run(argv: list[str], what: str) -> bytes:
    proc = subprocess.run(argv, capture_output=True, check=False)
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SetupError(f"{what} failed: {detail[-1] if detail else f'exit {proc.returncode}'}")
    return proc.stdout


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def kernel_dir() -> Path:
    """Cache directory of this kernel build, with its vmlinux.h."""
    btf = btf_path()
    if not btf.exists():
        raise SetupError(f"kernel BTF not found at {btf}: ktriage needs a kernel built with CONFIG_DEBUG_INFO_BTF")
    key = hashlib.sha256(btf.read_bytes()).hexdigest()[:16]
    kdir = cache_dir() / key
    header = kdir / "vmlinux.h"
    if not header.exists():
        bpftool = _tool("bpftool", "bpftool")
        _atomic_write(header, _run([bpftool, "btf", "dump", "file", str(btf), "format", "c"], "bpftool btf dump"))
    return kdir


def _sources() -> dict[str, bytes]:
    pkg = resources.files("ktriage.sensor") / "bpf"
    files = {p.name: p.read_bytes() for p in pkg.iterdir() if p.name.endswith((".c", ".h"))}
    files["kt_records.h"] = layouts.c_header().encode()
    return files


def build(name: str) -> Path:
    """Return the compiled object for ``bpf/<name>.bpf.c``, compiling it if needed."""
    arch = _ARCH.get(platform.machine())
    if arch is None:
        raise SetupError(f"unsupported CPU architecture {platform.machine()}: ktriage supports x86_64 and aarch64")
    kdir = kernel_dir()
    sources = _sources()
    digest = hashlib.sha256()
    for fname in sorted(sources):
        digest.update(fname.encode() + b"\0" + sources[fname])
    obj = kdir / f"{name}-{digest.hexdigest()[:16]}.bpf.o"
    if obj.exists():
        return obj
    clang = _tool("clang", "clang")
    if not LIBBPF_HEADERS.exists():
        raise SetupError(f"libbpf headers not found ({LIBBPF_HEADERS}): install the libbpf-dev package")
    with tempfile.TemporaryDirectory(prefix="ktriage-build-") as tmp:
        for fname, data in sources.items():
            Path(tmp, fname).write_bytes(data)
        shutil.copy(kdir / "vmlinux.h", Path(tmp, "vmlinux.h"))
        out = Path(tmp, "out.o")
        argv = [clang, "-g", "-O2", "-target", "bpf", "-mcpu=v3", f"-D__TARGET_ARCH_{arch}",
                "-I", tmp, "-c", str(Path(tmp, f"{name}.bpf.c")), "-o", str(out)]
        _run(argv, f"clang {name}.bpf.c")
        _atomic_write(obj, out.read_bytes())
    return obj
