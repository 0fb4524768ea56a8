"""Security telemetry, end to end under a live whole-host recording: each
generator performs a real attack behaviour and the decoded fields are checked."""

from __future__ import annotations

import json
import platform

import pytest

from conftest import Recording, generate

pytestmark = pytest.mark.root


def test_ptrace_poketext_and_setregs_into_a_child(host_recording: Recording) -> None:
    facts = generate("ptrace_inject")
    rows = host_recording.wait_rows("SELECT * FROM access WHERE pid=? AND op='ptrace' ORDER BY seq",
                                    (facts["pid"],), count=6)
    assert [r["request"] for r in rows] == ["PTRACE_ATTACH", "PTRACE_PEEKTEXT", "PTRACE_POKETEXT",
                                            "PTRACE_GETREGS", "PTRACE_SETREGS", "PTRACE_DETACH"]
    assert [r["rights"] for r in rows] == ["ATTACH", "MEM_READ", "MEM_WRITE", "REGS_READ", "REGS_WRITE", "CONTROL"]
    poke = rows[2]
    assert (poke["target_pid"], poke["target_tid"], poke["addr"]) == (facts["target"], facts["target"], facts["addr"])
    assert poke["target_image"] == "/usr/bin/sleep"
    assert all(r["result"] == 0 and r["origin_class"] == "libc" for r in rows)
    frames = json.loads(poke["stack"])
    assert frames[0][0] == poke["origin_ip"] and frames[0][1].startswith("libc.so")


def test_process_vm_writev_into_another_process(host_recording: Recording) -> None:
    facts = generate("vm_writev")
    rows = host_recording.wait_rows("SELECT * FROM access WHERE pid=? AND op='vm_writev'", (facts["pid"],))
    assert len(rows) == 1
    r = rows[0]
    assert (r["target_pid"], r["addr"], r["bytes"], r["count"]) == (facts["target"], facts["addr"], 16, 1)
    assert (r["rights"], r["rights_mask"], r["result"]) == ("MEM_WRITE", 0x2, 0)
    reads = host_recording.rows("SELECT rights FROM access WHERE pid=? AND op='vm_readv'", (facts["pid"],))
    assert [x["rights"] for x in reads] == ["MEM_READ"]


def test_proc_pid_mem_write_foreign_and_read_own(host_recording: Recording) -> None:
    facts = generate("proc_mem")
    rows = host_recording.wait_rows("SELECT * FROM access WHERE pid=? AND op='proc_mem' ORDER BY seq",
                                    (facts["pid"],), count=2)
    foreign, own = rows
    assert (foreign["target_pid"], foreign["own"], foreign["rights"]) == (facts["target"], 0, "MEM_READ|MEM_WRITE")
    assert (own["target_pid"], own["own"], own["rights"]) == (facts["pid"], 1, "MEM_READ")
    files = host_recording.rows("SELECT count(*) AS n FROM file WHERE pid=? AND path LIKE '/proc/%'", (facts["pid"],))
    assert files[0]["n"] == 0, "a /proc/PID/mem open is an access event, not a file event"


def test_mprotect_rw_to_rx_of_anonymous_memory(host_recording: Recording) -> None:
    facts = generate("wx_memory")
    rows = host_recording.wait_rows("SELECT * FROM memory WHERE pid=? AND op='mprotect' AND addr=?",
                                    (facts["pid"], facts["addr"]))
    assert len(rows) == 1
    r = rows[0]
    assert (r["old_prot"], r["prot"], r["anon"], r["length"], r["result"]) == ("rw-", "r-x", 1, 4096, 0)
    assert r["origin_class"] == "libc"


def test_mprotect_reports_exec_and_exec_made_writable_only(host_recording: Recording) -> None:
    facts = generate("exec_rewrite")
    assert host_recording.wait_rows("SELECT * FROM memory WHERE pid=? AND op='mprotect' AND addr=?",
                                    (facts["pid"], facts["marker"]))  # everything before it is stored
    rows = host_recording.rows("SELECT * FROM memory WHERE pid=? AND op='mprotect' AND addr=? ORDER BY seq",
                               (facts["pid"], facts["addr"]))
    assert [(r["old_prot"], r["prot"]) for r in rows] == [("rw-", "r-x"), ("r-x", "rw-")]


def test_memfd_exec(host_recording: Recording) -> None:
    facts = generate("memfd_exec")
    created = host_recording.wait_rows("SELECT * FROM memory WHERE pid=? AND op='memfd_create'", (facts["pid"],))
    assert len(created) == 1 and created[0]["name"] == facts["name"] and created[0]["fd"] >= 0
    execs = host_recording.wait_rows("SELECT * FROM process WHERE action='exec' AND pid=?", (facts["child"],))
    assert len(execs) == 1
    assert execs[0]["path"] == f"/memfd:{facts['name']}" and execs[0]["exe_deleted"] == 1


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the shellcode generator is x86-64 machine code")
def test_direct_syscall_from_anonymous_shellcode_vs_libc(host_recording: Recording) -> None:
    facts = generate("direct_syscall")
    rows = host_recording.wait_rows("SELECT * FROM memory WHERE pid=? AND op='mprotect' AND addr=? ORDER BY seq",
                                    (facts["pid"], facts["target"]), count=2)
    shell, libc = rows
    assert shell["origin_class"] == "anon" and shell["origin_ip"] == facts["syscall_ip"]
    assert facts["code"] <= shell["origin_ip"] < facts["code_end"]
    assert shell["origin_prot"] == "r-x"
    sample = bytes.fromhex(shell["sample"])
    assert b"\x0f\x05\xc3" in sample and len(sample) <= 64
    assert 0 < shell["sample_entropy"] <= 6.0
    assert libc["origin_class"] == "libc" and libc["origin_module"].startswith("libc.so")
    assert libc["sample"] is None, "samples are taken for non-image origins only"


def test_refused_finit_module_attempt(host_recording: Recording) -> None:
    facts = generate("finit_module")
    rows = host_recording.wait_rows("SELECT * FROM module WHERE pid=? AND op='finit_module'", (facts["pid"],))
    assert len(rows) == 1
    assert rows[0]["result"] == facts["result"] < 0
    assert rows[0]["path"] == "/usr/bin/true"


def test_bpf_program_load_by_another_process(host_recording: Recording) -> None:
    facts = generate("bpf_load")
    rows = host_recording.wait_rows("SELECT * FROM module WHERE pid=? AND op='bpf_prog_load'", (facts["pid"],))
    assert len(rows) == 1
    assert (rows[0]["name"], rows[0]["prog_type"], rows[0]["insn_cnt"]) == (facts["name"], 1, 2)
    assert rows[0]["result"] >= 0


def test_setuid(host_recording: Recording) -> None:
    facts = generate("setuid")
    rows = host_recording.wait_rows("SELECT * FROM api WHERE pid=? AND op='setuid'", (facts["child"],))
    assert len(rows) == 1
    r = rows[0]
    assert (r["old_uid"], r["new_uid"], r["old_euid"], r["new_euid"], r["result"]) == (0, 65534, 0, 65534, 0)
    assert json.loads(r["args"]) == {"uid": 65534}
    assert int(r["caps_before"], 16) != 0 and int(r["caps_after"], 16) == 0
    assert r["origin_class"] == "libc"


def test_signals_and_pidfds(host_recording: Recording) -> None:
    facts = generate("signals")
    pid = facts["pid"]
    kills = host_recording.wait_rows("SELECT * FROM signal WHERE pid=? AND op='kill' AND target_pid=?",
                                     (pid, facts["killed"]))
    assert [(k["signal_name"], k["signal"], k["result"]) for k in kills] == [("SIGTERM", 15, 0)]
    sent = host_recording.wait_rows("SELECT * FROM signal WHERE pid=? AND op='pidfd_send_signal'", (pid,))
    assert [(s["target_pid"], s["signal_name"]) for s in sent] == [(facts["pidfd_target"], "SIGKILL")]
    access = host_recording.wait_rows("SELECT * FROM access WHERE pid=? AND op LIKE 'pidfd%' ORDER BY seq", (pid,),
                                      count=2)
    assert [(a["op"], a["target_pid"], a["rights"]) for a in access] == [
        ("pidfd_open", facts["pidfd_target"], "CONTROL"), ("pidfd_getfd", facts["pidfd_target"], "FD_STEAL")]
