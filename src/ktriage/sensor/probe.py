"""Start-up probe: which BPF attach types work on this kernel.

Each type is tried for real (load and attach a tiny program alone), because
feature listings are misleading: a kernel can list kprobe programs as available
and still fail to attach them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ktriage.errors import BpfError
from ktriage.sensor import build
from ktriage.sensor.libbpf import BpfObject, expected_failures

log = logging.getLogger(__name__)

ATTACH_TYPES = ("tracepoint", "raw_tp", "tp_btf", "kprobe", "fentry", "lsm")


@dataclass(frozen=True)
class ProbeResult:
    works: dict[str, bool]
    reasons: dict[str, str]

    def summary(self) -> str:
        return " ".join(f"{t}={'yes' if self.works[t] else 'no'}" for t in ATTACH_TYPES)


def _try(path: str, attach_type: str) -> str:
    """Empty string when the type works, else the failure."""
    obj = BpfObject(path)
    try:
        obj.set_autoload(lambda name, _section: name == f"probe_{attach_type}")
        obj.load()
        obj.attach(f"probe_{attach_type}")
        return ""
    except BpfError as exc:
        return str(exc)
    finally:
        obj.close()


def probe() -> ProbeResult:
    path = str(build.build("probe"))
    with expected_failures():
        reasons = {t: _try(path, t) for t in ATTACH_TYPES}
    result = ProbeResult({t: not r for t, r in reasons.items()}, reasons)
    log.info("attach types: %s", result.summary())
    return result
