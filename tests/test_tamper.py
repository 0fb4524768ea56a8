"""Sensor tamper-evidence, attack by attack, on the real kernel with the real bpftool and real
signals: an intruder with root who wants the sensor blind is seen, named (pid and image) and
stored. Each test prints the detection delay it measured (pytest -s shows them)."""

from __future__ import annotations

import os
import signal
import sqlite3
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Recording
from ktriage.sensor import layouts

pytestmark = pytest.mark.root

BPFTOOL = "/usr/sbin/bpftool"
KILL = "/usr/bin/kill"
TAMPER = "SELECT * FROM detection WHERE name='SENSOR_TAMPER_ATTEMPT'"


def own_objects(pid: int, kind: str = "map") -> dict[str, int]:
    """name -> id of the BPF maps (or links) a process holds, read from its fdinfo."""
    key = f"{kind}_id:"
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        ids |= {int(line.split()[1]) for line in text.splitlines() if line.startswith(key)}
    if kind != "map":
        return {str(i): i for i in ids}
    names = {}
    for map_id in ids:
        out = subprocess.run([BPFTOOL, "map", "show", "id", str(map_id)], capture_output=True, text=True)
        if out.returncode == 0:
            names[out.stdout.split()[3]] = map_id
    return names


def run_attacker(argv: list[str]) -> tuple[int, int, str]:
    """Run an attacking command; its pid, exit status and stderr."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=30)
    return proc.pid, proc.returncode, err


def wait_detection(rec: Recording, sql: str, params: tuple, since: float, timeout: float = 15) -> tuple[list, float]:
    rows = rec.wait_rows(sql, params, timeout=timeout)
    return rows, time.monotonic() - since


def busy(seconds: float) -> None:
    """Activity the sensor should report (exec of /bin/true)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        subprocess.run(["/bin/true"])
        time.sleep(0.05)


def test_kt_cfg_rewrite_by_bpftool_is_refused_and_detected(tmp_path: Path) -> None:
    rec = Recording(tmp_path / "cfg.db")
    try:
        cfg_id = own_objects(rec.proc.pid)["kt_cfg"]
        value = struct.pack("<7I", rec.proc.pid, 0, 0, 0xFFFFFFFF, 0, 1 << 21, 0)  # family mask 0: blind
        value += bytes(layouts.CONFIG_STRUCT.size - len(value))
        start = time.monotonic()
        pid, status, err = run_attacker([BPFTOOL, "map", "update", "id", str(cfg_id), "key", "0", "0", "0", "0",
                                         "value", *map(str, value)])
        rows, delay = wait_detection(rec, TAMPER + " AND pid=?", (pid,), start)
        print(f"\nkt_cfg update: bpftool exit {status}, detected after {delay:.3f} s")
        since = time.time_ns()
        busy(1)
        after = rec.wait_rows("SELECT 1 FROM process WHERE path LIKE '%/true' AND ts > ?", (since,))
    finally:
        rec.stop()
    assert status != 0 and "Operation not permitted" in err, "a frozen kt_cfg refuses writes from user space"
    assert after, "the sensor still records after the attempt"
    assert len(rows) == 1
    det = rows[0]
    assert (det["actor_pid"], det["image"], det["severity"]) == (pid, BPFTOOL, 7)
    assert delay < 2


def test_sigstop_then_sigcont_reports_who_and_how_long(tmp_path: Path) -> None:
    rec = Recording(tmp_path / "stop.db")
    try:
        stopper, _, _ = run_attacker([KILL, "-STOP", str(rec.proc.pid)])
        time.sleep(3)
        resumed = time.monotonic()
        run_attacker([KILL, "-CONT", str(rec.proc.pid)])
        rows, delay = wait_detection(rec, TAMPER + " AND pid=? AND reason LIKE '%stopped%'", (stopper,), resumed)
        print(f"\nSIGSTOP 3 s: detected {delay:.3f} s after SIGCONT")
    finally:
        rec.stop()
    assert len(rows) == 1
    det = rows[0]
    assert (det["actor_pid"], det["image"]) == (stopper, KILL)
    assert 2800 <= det["age_ms"] <= 4500, det["age_ms"]
    assert delay < 2


def test_long_sigstop_is_reported_by_the_watchdog_while_stopped(tmp_path: Path) -> None:
    rec = Recording(tmp_path / "longstop.db", "--stop-bound", "2")
    try:
        start = time.monotonic()
        stopper, _, _ = run_attacker([KILL, "-STOP", str(rec.proc.pid)])
        rows, delay = wait_detection(rec, TAMPER + " AND source LIKE 'watchdog:%'", (), start, timeout=12)
        state = Path(f"/proc/{rec.proc.pid}/stat").read_text().split(") ")[1][0]
        print(f"\nSIGSTOP left: watchdog detection {delay:.3f} s after the stop (bound 2 s)")
        os.kill(rec.proc.pid, signal.SIGCONT)
    finally:
        rec.stop()
    assert state == "T", "reported while the sensor is still stopped"
    assert len(rows) == 1
    det = rows[0]
    assert (det["actor_pid"], det["image"]) == (stopper, KILL)
    assert 2 <= delay < 5


def _run(db: Path) -> sqlite3.Row:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return con.execute("SELECT * FROM runs ORDER BY id LIMIT 1").fetchone()
    finally:
        con.close()


def test_sigkill_is_named_by_the_watchdog(tmp_path: Path) -> None:
    db = tmp_path / "kill.db"
    rec = Recording(db)
    start, killed_ns = time.monotonic(), time.time_ns()
    killer, _, _ = run_attacker([KILL, "-KILL", str(rec.proc.pid)])
    rec.proc.wait(timeout=10)  # its exit takes seconds: every BPF link is torn down
    rows, seen = wait_detection(rec, TAMPER + " AND pid=?", (killer,), start)
    delay = (rows[0]["ts"] - killed_ns) / 1e9 if rows else seen
    print(f"\nSIGKILL: watchdog detection {delay:.3f} s after the kill (the recorder was reaped after {seen:.3f} s)")
    run = _run(db)
    assert len(rows) == 1
    det = rows[0]
    assert (det["actor_pid"], det["image"], det["severity"]) == (killer, KILL, 7)
    assert det["source"].startswith("watchdog:") and "SIGKILL" in det["reason"]
    assert run["ended"] is not None and "SIGKILL" in run["end_reason"]
    assert delay < 1, "named from the pinned mark, before the sensor's exit completes"


def test_sigkill_of_watchdog_then_sensor_is_named_at_the_next_start(tmp_path: Path) -> None:
    db = tmp_path / "kill2.db"
    rec = Recording(db)
    watchdog = int(subprocess.run(["pgrep", "-P", str(rec.proc.pid), "-f", "ktriage.sources.linux.watchdog"],
                                  capture_output=True, text=True).stdout.split()[0])
    first, _, _ = run_attacker([KILL, "-KILL", str(watchdog)])
    gone = rec.wait_rows(TAMPER + " AND reason LIKE '%watchdog%'", ())
    killer, _, _ = run_attacker([KILL, "-KILL", str(rec.proc.pid)])
    rec.proc.wait(timeout=10)
    assert _run(db)["ended"] is None, "nobody was left to see the kill"
    start = time.monotonic()
    nxt = Recording(db)
    try:
        rows, delay = wait_detection(nxt, TAMPER + " AND pid=?", (killer,), start)
        print(f"\nSIGKILL of watchdog then sensor: named {delay:.3f} s after the next start began")
    finally:
        nxt.stop()
    assert gone and gone[0]["actor_pid"] == first, "the sensor saw its watchdog killed"
    assert len(rows) == 1 and rows[0]["image"] == KILL and "SIGKILL" in rows[0]["reason"]
    assert "SIGKILL" in _run(db)["end_reason"]


def test_targets_of_a_pid_recording_cannot_be_rewritten(tmp_path: Path) -> None:
    victim = subprocess.Popen(["/bin/sleep", "60"])
    rec = Recording(tmp_path / "targets.db", "--pid", str(victim.pid))
    try:
        targets = own_objects(rec.proc.pid)["targets"]
        key = [str(b) for b in struct.pack("<I", victim.pid)]
        start = time.monotonic()
        deleter, del_status, del_err = run_attacker([BPFTOOL, "map", "delete", "id", str(targets), "key", *key])
        adder, add_status, _ = run_attacker([BPFTOOL, "map", "update", "id", str(targets), "key",
                                             *[str(b) for b in struct.pack("<I", os.getpid())], "value", *["0"] * 8])
        rows, delay = wait_detection(rec, TAMPER + " AND pid IN (?, ?)", (deleter, adder), start)
        rows = rec.wait_rows(TAMPER + " AND pid IN (?, ?)", (deleter, adder), count=2)
        print(f"\ntargets delete/update in a --pid recording: detected after {delay:.3f} s")
        ops = {r["trigger_id"]: r for r in rows}
        events = rec.rows("SELECT op, name, result, pid FROM module WHERE target_is_sensor=1 ORDER BY seq")
    finally:
        rec.stop()
        victim.kill()
    assert del_status != 0 and add_status != 0 and "Operation not permitted" in del_err
    assert len(ops) == 2 and {r["image"] for r in rows} == {BPFTOOL}
    assert {(e["op"], e["name"], e["result"]) for e in events if e["pid"] in (deleter, adder)} == {
        ("bpf_map_delete_elem", "targets", -1), ("bpf_map_update_elem", "targets", -1)}
    assert delay < 2


def test_link_detach_attempt_is_detected(tmp_path: Path) -> None:
    rec = Recording(tmp_path / "link.db")
    try:
        link = min(own_objects(rec.proc.pid, "link").values())
        start = time.monotonic()
        pid, status, err = run_attacker([BPFTOOL, "link", "detach", "id", str(link)])
        rows, delay = wait_detection(rec, TAMPER + " AND pid=?", (pid,), start)
        event = rec.rows("SELECT op, bpf_object, result FROM module WHERE pid=? AND target_is_sensor=1", (pid,))
        print(f"\nlink detach ({err.strip()}): detected after {delay:.3f} s")
    finally:
        rec.stop()
    assert len(rows) == 1 and rows[0]["image"] == BPFTOOL
    assert [(e["op"], e["bpf_object"]) for e in event] == [("bpf_link_detach", f"link {link}")]
    assert delay < 2


def test_benign_bpftool_listing_and_foreign_maps_are_not_tamper(tmp_path: Path) -> None:
    pin = Path("/sys/fs/bpf/ktriage-test-foreign")
    rec = Recording(tmp_path / "benign.db")
    try:
        listing = [run_attacker([BPFTOOL, what, "list"])[0] for what in ("prog", "map", "link")]
        subprocess.run([BPFTOOL, "map", "create", str(pin), "type", "array", "key", "4", "value", "4",
                        "entries", "1", "name", "foreign"], check=True)
        own = run_attacker([BPFTOOL, "map", "update", "pinned", str(pin), "key", "0", "0", "0", "0",
                            "value", "1", "0", "0", "0"])
        dump = run_attacker([BPFTOOL, "map", "dump", "id", str(own_objects(rec.proc.pid)["kt_cfg"])])
        read = rec.wait_rows("SELECT * FROM detection WHERE name='SENSOR_STATE_READ' AND pid=?", (dump[0],))
        time.sleep(1)
        tamper = rec.rows(TAMPER)
    finally:
        rec.stop()
        pin.unlink(missing_ok=True)
    assert own[1] == 0 and dump[1] == 0
    assert tamper == [], [dict(r) for r in tamper]
    assert len(read) == 1 and read[0]["severity"] == 4, "reading the sensor's maps is reconnaissance, weak signal"
    assert not rec.rows("SELECT 1 FROM detection WHERE pid IN (?, ?, ?, ?)", (*listing, own[0]))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_parent_stopping_the_recorder_is_not_tamper(tmp_path: Path, sig: int) -> None:
    db = tmp_path / "clean.db"
    rec = Recording(db)
    watchdog = subprocess.run(["pgrep", "-P", str(rec.proc.pid)], capture_output=True, text=True).stdout.split()
    rec.stop(sig)
    time.sleep(0.5)
    run = _run(db)
    assert rec.rows(TAMPER) == []
    assert run["ended"] is not None and run["end_reason"] is None and run["pid"] == rec.proc.pid
    assert len(watchdog) == 1 and not Path(f"/proc/{watchdog[0]}").exists(), "the watchdog left with the sensor"
    again = Recording(db)
    again.stop()
    assert again.rows(TAMPER) == [], "a clean end is not reported at the next start"


def test_run_bookkeeping_of_abnormal_ends(db_target: str) -> None:
    from ktriage.store.access import open_store

    store = open_store(db_target)
    try:
        run = store.begin_run("h1", "ebpf", "6.x", "0", "ktriage record", {})
        store.set_run_process(run, 4242, 777)
        assert store.open_runs("h1") == [(run, 4242, 777, store.open_runs("h1")[0][3])]
        assert store.open_runs("h2") == []
        assert store.end_run_abnormally(run, "killed by SIGKILL")
        assert not store.end_run_abnormally(run, "again"), "an ended run keeps its first end"
        assert store.open_runs("h1") == []
    finally:
        store.close()
    reopened = open_store(db_target)  # the added columns exist once: migration is idempotent
    reopened.close()


def test_sigkill_by_the_parent_closes_the_run_without_tamper(tmp_path: Path) -> None:
    db = tmp_path / "parentkill.db"
    rec = Recording(db)
    rec.proc.kill()  # the test is the recorder's parent: like systemd's final SIGKILL after a stop timeout
    rec.proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while _run(db)["ended"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "not tamper" in (_run(db)["end_reason"] or "")
    assert rec.rows(TAMPER) == []


def test_two_recorders_at_once_do_not_report_each_other(tmp_path: Path) -> None:
    first = Recording(tmp_path / "a.db")
    second = Recording(tmp_path / "b.db")
    time.sleep(11)  # two integrity checks each: both read the shared pinned signal marks
    second.stop()
    first.stop()
    for rec in (first, second):
        assert rec.rows("SELECT name, reason FROM detection WHERE name LIKE 'SENSOR%'") == []
        assert rec.rows("SELECT 1 FROM module WHERE target_is_sensor = 1") == []
