"""`ktriage selftest`: prove the sensor and the detections on this host with
real, self-cleaning attacks and benign baselines that must stay quiet.

One sensor runs for the whole suite in targeted mode; each generator is
launched held before exec, added to the kernel's target set, then released,
so every event of its process tree is seen and nothing else is. Output in the
seed's suite style: ``[PASS|FAIL|SKIP][T0001] text [+ms]``, then a count line;
exit 0 only when nothing failed.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from ktriage.commands.watch import Launch
from ktriage.model.event import Event
from ktriage.sensor.sensor import SensorOptions
from ktriage.sources.linux.live import POLL_MS, Live, live_pipeline, require_root

GEN = [sys.executable, "-m", "ktriage.selftest.generators"]
X86 = platform.machine() == "x86_64"


@dataclass(frozen=True)
class Check:
    text: str
    argv: tuple[str, ...]
    expect: tuple[str, ...] = ()  # detections that must appear
    quiet: bool = False  # a benign baseline: no detection at all
    skip: str = ""  # why it cannot run here, or empty


def _gen(name: str) -> tuple[str, ...]:
    return (*GEN, name)


def checks() -> list[Check]:
    strace = shutil.which("strace")
    return [
        Check("process baseline (exec, exit, kill) stays quiet", _gen("process"), quiet=True),
        Check("file baseline (create, write, rename, chmod, unlink) stays quiet", _gen("file"), quiet=True),
        Check("network baseline (TCP, UDP, ICMP socket) stays quiet", _gen("network"), quiet=True),
        Check("thread and image baseline stays quiet", _gen("thread"), quiet=True),
        Check("privilege drop (setuid root to nobody) stays quiet", _gen("setuid"), quiet=True),
        Check("a tracer on its own child (strace) stays quiet",
              (strace or "strace", "-f", "-o", "/dev/null", "/bin/true"), quiet=True,
              skip="" if strace else "strace is not installed"),
        Check("ptrace thread hijack of a foreign process (injected code ran) detected", _gen("thread_hijack"),
              ("THREAD_HIJACK_INTENT", "POSSIBLE_PROCESS_HOLLOWING_OR_INJECTION_INTENT_CHAIN"),
              skip="" if X86 else "x86-64 shellcode"),
        Check("hollowing of a freshly spawned child (its code replaced) detected", _gen("hollow_child"),
              ("PROCESS_HOLLOWING_MARK_CHAIN_STRONG",), skip="" if X86 else "x86-64 shellcode"),
        Check("process_vm_writev injection detected", _gen("vm_writev"), ("PROCESS_VM_WRITEV_INJECTION",)),
        Check("/proc/PID/mem injection detected", _gen("proc_mem"), ("PROC_MEM_INJECTION",)),
        Check("memfd execution detected", _gen("memfd_exec"), ("FILELESS_EXECUTION",)),
        Check("deleted-file execution detected", _gen("deleted_exec"), ("FILELESS_EXECUTION",)),
        Check("W->X anonymous memory detected", _gen("wx_memory"), ("WX_MEMORY",)),
        Check("RW->RX shellcode issuing a direct syscall detected", _gen("direct_syscall"),
              ("SYSCALL_FROM_ANONYMOUS_CODE", "WX_MEMORY"), skip="" if X86 else "x86-64 shellcode"),
        Check("stack pivot before a syscall detected", _gen("stack_pivot"),
              ("STACK_INTEGRITY_ANOMALY_ON_HANDLE_OP",), skip="" if X86 else "x86-64 shellcode"),
        Check("LD_PRELOAD and /etc/ld.so.preload hijack detected (file unchanged)", _gen("preload"),
              ("PRELOAD_ENVIRONMENT", "LD_SO_PRELOAD_WRITE")),
        Check("persistence writes (cron, profile) detected and removed", _gen("persistence"),
              ("PERSISTENCE_FILE_WRITE",)),
        Check("kernel module load attempt detected", _gen("finit_module"), ("KERNEL_MODULE_LOAD",)),
        Check("BPF program load by another process detected", _gen("bpf_load"), ("BPF_PROGRAM_LOAD",)),
        Check("privilege regained (euid nobody -> root) detected", _gen("escalate"), ("PRIVILEGE_GAINED",)),
        Check("tampering with the sensor (stop, memory open) detected", _gen("tamper"), ("SENSOR_TAMPER_ATTEMPT",)),
        Check("a write to the sensor's frozen BPF config refused and detected (same bytes written back)",
              _gen("bpf_tamper"), ("SENSOR_TAMPER_ATTEMPT", "SENSOR_STATE_READ")),
    ]


class Suite:
    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
        self.n = 0
        self.start = self.last = time.monotonic()

    def result(self, status: str, text: str) -> None:
        now = time.monotonic()
        self.n += 1
        self.counts[status] += 1
        self.out.write(f"[{status}][T{self.n:04d}] {text} [+{(now - self.last) * 1000:.3f}ms "
                       f"suite={(now - self.start) * 1000:.3f}ms]\n")
        self.out.flush()
        self.last = now

    def run(self) -> int:
        require_root("selftest")
        live = live_pipeline(SensorOptions(targeted=True))
        live.pipeline.start()
        probe = live.source.sensor.probe
        assert probe is not None
        self.result("PASS", f"sensor attached ({probe.summary()})")
        os.environ["KTRIAGE_SENSOR_PID"] = str(os.getpid())
        try:
            for check in checks():
                self._one(live, check)
        finally:
            live.source.close()
        c = self.counts
        self.out.write(f"{c['PASS']} passed, {c['FAIL']} failed, {c['SKIP']} skipped\n")
        return 0 if c["FAIL"] == 0 else 1

    def _one(self, live: Live, check: Check) -> None:
        if check.skip:
            self.result("SKIP", f"{check.text} skipped ({check.skip})")
            return
        events, detections, status = self._observe(live, list(check.argv))
        names = {d["name"] for d in detections}
        missing = [n for n in check.expect if n not in names]
        if status != 0:
            self.result("FAIL", f"{check.text}: generator exited {status}")
        elif not events:
            self.result("FAIL", f"{check.text}: no event of the generator reached the sensor")
        elif check.quiet and detections:
            self.result("FAIL", f"{check.text}: unexpected {sorted(names)}")
        elif check.quiet:
            self.result("PASS", f"{check.text} ({events} events, no detection)")
        elif missing:
            self.result("FAIL", f"{check.text}: missing {missing} (saw {sorted(names) or 'none'})")
        else:
            self.result("PASS", check.text)

    @staticmethod
    def _observe(live: Live, argv: list[str]) -> tuple[int, list[dict], int]:
        """Run argv as a target: how many events its process tree made, their detections, its exit status."""
        seen, status = observe(live, argv)
        detections = [e for e in seen if e["family"] == "detection"]
        return len(seen) - len(detections), detections, status


def observe(live: Live, argv: list[str]) -> tuple[list[Event], int]:
    """Run argv as the only target (60 s at most): every event and detection of its process tree, its exit status."""
    launch = Launch(argv, stdout=os.open(os.devnull, os.O_WRONLY))
    live.source.sensor.set_targets({launch.pid: 0})
    launch.release()
    seen: list[Event] = []
    deadline = time.monotonic() + 60
    while not launch.finished() and time.monotonic() < deadline:
        seen += live.pipeline.step(POLL_MS)
    seen += live.pipeline.step(100) + live.pipeline.step(0)
    if not launch.finished():
        launch.abandon()
    return seen, launch.status if launch.status is not None else -1
