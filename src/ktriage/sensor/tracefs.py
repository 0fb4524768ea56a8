"""Make sure tracefs is mounted: libbpf resolves tracepoint ids through it."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from ktriage.errors import SetupError

log = logging.getLogger(__name__)
CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


def ensure_mounted() -> Path:
    for path in CANDIDATES:
        if (path / "events").is_dir():
            return path
    target = CANDIDATES[0]
    if not target.is_dir():
        raise SetupError(f"{target} does not exist: this kernel has no tracefs (CONFIG_TRACING)")
    proc = subprocess.run(["mount", "-t", "tracefs", "nodev", str(target)], capture_output=True, check=False)
    if proc.returncode != 0 or not (target / "events").is_dir():
        raise SetupError(f"cannot mount tracefs on {target}: {proc.stderr.decode(errors='replace').strip()}")
    log.info("mounted tracefs on %s", target)
    return target

