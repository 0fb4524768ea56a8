"""`ktriage watch`: a launched command or a pid, rendered live."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ktriage

pytestmark = pytest.mark.root
GEN = [sys.executable, "-m", "ktriage.selftest.generators"]


def _events(stdout: str) -> list[dict]:
    return [e for e in map(json.loads, stdout.splitlines()) if "family" in e]


def _quiet_facts(path) -> dict[str, str]:
    """The generator writes its facts to a file, not to the stdout it shares with watch."""
    return dict(os.environ, KTRIAGE_FACTS=str(path))


def test_watch_command_jsonl_sees_the_whole_attack(root: None, tmp_path) -> None:
    proc = ktriage("watch", "--format", "jsonl", "--", *GEN, "ptrace_inject", env=_quiet_facts(tmp_path / "f"))
    assert proc.returncode == 0, proc.stderr
    facts = json.loads((tmp_path / "f").read_text())
    events = _events(proc.stdout)
    execs = [e for e in events if e["family"] == "process" and e["action"] == "exec"]
    assert execs[0]["pid"] == facts["pid"], "the launched command is watched from its exec on"
    pokes = [e for e in events if e["family"] == "access" and e["request"] == "PTRACE_POKETEXT"]
    assert [(p["target_pid"], p["addr"]) for p in pokes] == [(facts["target"], facts["addr"])]
    victim_exec = [e for e in execs if e["pid"] == facts["target"]]
    assert victim_exec and victim_exec[0]["path"] == "/usr/bin/sleep", "children are followed"


def test_watch_text_preview_layout(root: None, tmp_path) -> None:
    proc = ktriage("watch", "--color", "never", "--streams", "memory", "--", *GEN, "wx_memory",
                   env=_quiet_facts(tmp_path / "f"))
    assert proc.returncode == 0, proc.stderr
    preview = proc.stdout
    blocks = [b.strip("\n") for b in preview.split("\n\n") if b.strip("\n").startswith("[MEMORY]")]
    assert blocks, proc.stdout
    block = blocks[-1].splitlines()
    assert block[0].startswith("[MEMORY] LEGITIMATE-SYSCALL  mprotect addr=0x") and "prot=rw-->r-x" in block[0]
    labels = [line[:6] for line in block[1:] if not line.startswith(" ")]
    assert labels == ["Meta  ", "Actor ", "Origin", "Status", "Stack ", "Alert "]
    assert "\033[" not in proc.stdout


def test_watch_pid_ends_with_its_process(root: None) -> None:
    idle = subprocess.Popen([*GEN, "idle"])
    watch = subprocess.Popen([sys.executable, "-m", "ktriage", "watch", "--format", "jsonl", "--pid", str(idle.pid)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in watch.stderr:
        if "watching pid" in line:
            break
    subprocess.run(["/bin/kill", "-TERM", str(idle.pid)], check=True)
    idle.wait()
    out, _ = watch.communicate(timeout=30)
    assert watch.returncode == 0
    exits = [e for e in _events(out) if e["family"] == "process" and e["action"] == "exit"]
    assert [(e["pid"], e["exit_signal"]) for e in exits] == [(idle.pid, 15)]


def test_watch_bad_input(root: None) -> None:
    for args, needle in ((("watch",), "either --pid"), (("watch", "--", "no-such-command-kt"), "command not found"),
                         (("watch", "--streams", "bogus", "--pid", "1"), "unknown stream bogus")):
        proc = ktriage(*args)
        assert proc.returncode != 0
        assert needle in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 2  # argparse adds its usage line for option errors


def test_watch_renders_alerts_under_the_triggering_event(root: None, tmp_path) -> None:
    proc = ktriage("watch", "--color", "never", "--streams", "memory,process", "--", *GEN, "wx_memory",
                   env=_quiet_facts(tmp_path / "f"))
    assert proc.returncode == 0, proc.stderr
    blocks = [b.strip("\n") for b in proc.stdout.split("\n\n")]
    alerted = [b for b in blocks if "Alert  WX_MEMORY severity=5" in b]
    assert len(alerted) == 1
    assert alerted[0].startswith("[MEMORY]") and "prot=rw-->r-x" in alerted[0].splitlines()[0]
    assert "technique=T1055,T1027.002" in alerted[0]
