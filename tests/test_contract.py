"""The event contract (model/), held strictly against what every source of ktriage really emits:
the live Linux sensor over every family's generator and the security attacks, every Windows sample
through the ingest's reader, the replay fixtures and replay's detections, the watchdog's, the
recovery's and the state checks' detections. And the store: a key the model does not name is
counted and named, not dropped silently."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import windows_data
from ktriage.model.check import emitted_problems
from ktriage.model.families import KERNEL_FAMILIES
from ktriage.pipeline.bus import Bus
from ktriage.store.access import open_store
from ktriage.store.sqlite import SqliteStore
from ktriage.store.writer import StoreWriter

FIXTURES = Path(__file__).parent / "fixtures" / "replay"


def problems_of(events: list[dict[str, Any]]) -> Counter[str]:
    """Each problem (the same wording once) with the number of events that have it."""
    found: Counter[str] = Counter()
    for ev in events:
        found.update(set(emitted_problems(ev)))
    return found


def assert_kept(events: list[dict[str, Any]], what: str) -> None:
    found = problems_of(events)
    assert not found, f"{what}: " + "; ".join(f"{n} x {p}" for p, n in found.most_common(12))


def _file_event(seq: int, **extra: Any) -> dict[str, Any]:
    return {"family": "file", "ts": seq, "host": "h", "source": "ebpf:t", "seq": seq, "pid": 7, "op": "create",
            "path": f"/tmp/f{seq}", **extra}


# -- the check itself ------------------------------------------------------------------------------

def test_the_strict_check_names_each_problem_in_one_line() -> None:
    ok = _file_event(1, tid=7, ppid=1, uid=0, comm="sh", mntns=1, image="/bin/sh")
    assert emitted_problems(ok) == []
    bad = dict(ok, colour="red", mode="0755", open_flags=True, uid=1 << 64)
    del bad["host"]
    assert sorted(emitted_problems(bad)) == [
        "file event without host",
        "file.colour: not a field of the model",
        "file.mode must be an integer (64 bits at most), not '0755'",
        "file.open_flags must be an integer (64 bits at most), not True",
        "file.uid must be an integer (64 bits at most), not 18446744073709551616",
    ]
    assert emitted_problems({k: v for k, v in ok.items() if k != "pid"}) == [
        "file event without the key pid", "file event of ebpf without pid"]
    assert emitted_problems(dict(ok, tid=None)) == ["file event of ebpf without tid"]
    assert emitted_problems(dict(ok, family="nope")) == ["unknown family 'nope'"]
    assert emitted_problems([ok]) == ["an event is a dict, not list"]
    assert all("\n" not in p for p in emitted_problems(bad))


def test_the_strict_check_holds_a_detection_to_its_own_fields() -> None:
    det = {"family": "detection", "ts": 1, "host": "h", "source": "detect/ebpf:t", "seq": 1, "pid": None,
           "name": "X", "severity": 5, "reason": "because", "rule": "r", "event_ids": json.dumps(["file/s#1"]),
           "evidence": json.dumps([["step", "file/s#1"]])}
    assert emitted_problems(det) == []
    assert emitted_problems(dict(det, severity=11, event_ids="[1]", evidence='{"a": 1}', reason=None)) == [
        "detection without reason", "detection.severity must be 1-10, not 11",
        "detection.event_ids must be a JSON list of event ids, not '[1]'",
        "detection.evidence must be a JSON list of [label, value], not '{\"a\": 1}'"]


# -- the store: unknown keys counted, not dropped silently -------------------------------------------

def test_the_store_counts_and_names_a_key_the_model_does_not_name(db_target: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(db_target)
    caplog.set_level(logging.WARNING, logger="ktriage.store")
    try:
        assert store.insert([_file_event(1, colour="red"), _file_event(2, colour="blue", shade=3),
                             _file_event(3)]) == 3
        assert store.insert([_file_event(4, colour="green", **{"forged\nktriage: all clear": 1})]) == 1
        # a batch that goes again fitted (a 100-bit integer) is counted once
        assert store.insert([_file_event(5, colour="x", ino=1 << 100)]) == 1
        assert store.unknown_keys == 6
    finally:
        store.close()
    named = [r.getMessage() for r in caplog.records if "not a field of the model" in r.getMessage()]
    tail = " is not a field of the model: not stored (counted in store unknown_keys)"
    assert sorted(named) == [f"{store.path}: file.'forged\\nktriage: all clear'{tail}",
                             f"{store.path}: file.colour{tail}", f"{store.path}: file.shade{tail}"], \
        "each (family, key) named once, on one line"


def test_a_runs_stats_carry_the_unknown_keys_count(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "stats.db")
    bus = Bus()
    writer = StoreWriter(store, bus.subscribe("store", 1000), interval=0.05)
    writer.start()
    bus.publish([_file_event(1, colour="red"), _file_event(2)])
    bus.close()
    writer.join(10)
    store.close()
    assert ("store", "", "unknown_keys", 1) in writer.rows()
    assert ("store", "", "written", 2) in writer.rows()


# -- Windows: every file of the dev samples through the ingest's reader ----------------------------

def test_every_windows_sample_keeps_the_contract() -> None:
    import hashlib

    from ktriage.commands.ingest_read import FileReader
    from ktriage.detect.engine import Engine
    from ktriage.detect.rules import builtin_rules
    from ktriage.sources.reading import ReadLimits

    data = windows_data()
    reader = FileReader(Engine(builtin_rules("windows")), ReadLimits())
    events: list[dict[str, Any]] = []
    detections: list[dict[str, Any]] = []
    files = sorted(p for p in data.rglob("*") if p.is_file())
    for path in files:  # read where they are, never copied
        found = reader.detected(path, hashlib.sha256(path.read_bytes()).hexdigest())
        events += found.events
        detections += found.detections
    print(f"\n{len(files)} files: {len(events)} events, {len(detections)} detections")
    assert len(files) >= 120 and len(events) >= 2500 and len(detections) >= 150, "the samples are all there"
    assert {e["family"] for e in events} >= {"process", "thread", "image", "file", "network", "access", "module",
                                             "api", "registry"}
    assert_kept(events, "Windows events")
    assert_kept(detections, "Windows detections")


# -- replay: the JSON-lines fixtures as written, as replay reads them, as a store gives them back ------

def test_the_replay_fixtures_and_replays_detections_keep_the_contract(tmp_path: Path) -> None:
    from ktriage.detect.rules import builtin_rules
    from ktriage.sources.replay import jsonl_events, replay, stored_events
    from ktriage.store.readonly import open_readonly

    written: list[dict[str, Any]] = []
    read: list[dict[str, Any]] = []
    for path in sorted(FIXTURES.glob("*.jsonl")):
        written += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        read += jsonl_events(path)
    detections = replay(read, builtin_rules("linux"))
    store = SqliteStore(tmp_path / "replay.db")
    store.insert(read)
    store.close()
    db = open_readonly(str(tmp_path / "replay.db"))
    try:
        stored = list(stored_events(db))
    finally:
        db.close()
    stored_detections = replay(stored, builtin_rules("linux"))
    print(f"\n{len(written)} lines, {len(read)} events, {len(detections)} detections")
    assert len(read) >= 600 and len(detections) >= 20 and len(stored) == len(read)
    for what, group in (("fixture lines", written), ("events read", read), ("detections", detections),
                        ("stored events", stored), ("detections of stored events", stored_detections)):
        assert_kept(group, what)


# -- the live Linux source: the real sensor over every family's generator and every attack ------------

GENERATORS = [sys.executable, "-m", "ktriage.selftest.generators"]


def _observe(live: Any, name: str) -> list[dict[str, Any]]:
    """Every event and detection of one generator's process tree (targeted: nothing else)."""
    from ktriage.selftest.suite import observe

    seen, status = observe(live, [*GENERATORS, name])
    assert status == 0, f"generator {name} exited {status}"
    return seen


@pytest.mark.root
def test_the_live_sensor_keeps_the_contract(root: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from ktriage.selftest.generators import GENERATORS as BEHAVIOURS
    from ktriage.sensor.sensor import SensorOptions
    from ktriage.sources.linux.live import live_pipeline

    live = live_pipeline(SensorOptions(targeted=True))
    live.pipeline.start()
    monkeypatch.setenv("KTRIAGE_SENSOR_PID", str(os.getpid()))  # tamper, bpf_tamper: this process is the sensor
    events: list[dict[str, Any]] = []
    try:
        for name in BEHAVIOURS:
            if name not in ("burst", "idle"):  # a flood and a sleeper: nothing the others do not emit
                events += _observe(live, name)
    finally:
        live.source.close()
    detections = [e for e in events if e["family"] == "detection"]
    print(f"\n{len(events)} events: {dict(Counter(e['family'] for e in events))}; "
          f"detections by rule {dict(Counter(d['rule'] for d in detections))}")
    assert {e["family"] for e in events} == {*KERNEL_FAMILIES, "detection"}, "every stream of the kernel seen"
    assert len(detections) >= 20 and "tamper" in {d["rule"] for d in detections}, "the state checks' stop too"
    assert_kept(events, "live events and detections")


# -- the detections of the sensor's own state: integrity, the watchdog, the recovery at a start ------

def _stored_detections(db: Path) -> list[dict[str, Any]]:
    import sqlite3

    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in con.execute("SELECT * FROM detection ORDER BY seq")]
    finally:
        con.close()
    for row in rows:
        del row["id"]  # the table's own key, not the event's
        row["family"] = "detection"
    return rows


def test_the_integrity_drift_and_its_clearing_keep_the_contract() -> None:
    from ktriage.detect.integrity import IntegrityMonitor

    monitor = IntegrityMonitor("h", "ebpf:t")
    drift = monitor.check(lost_total=12, next_seq=1, force=True)
    cleared = monitor.check(lost_total=12, next_seq=2, force=True)
    assert drift is not None and drift["name"] == "SENSOR_INTEGRITY_DRIFT"
    assert cleared is not None and cleared["name"] == "SENSOR_INTEGRITY_CLEARED"
    assert_kept([drift, cleared], "integrity detections")


def _stopped(pid: int, timeout: float = 5) -> None:
    from ktriage.sources.linux.procs import state_and_start

    deadline = time.monotonic() + timeout
    while (found := state_and_start(pid)) is not None and found[0] not in "Tt":
        assert time.monotonic() < deadline, f"{pid} did not stop"
        time.sleep(0.02)


@pytest.mark.root
def test_the_watchdogs_detections_keep_the_contract(root: None, tmp_path: Path) -> None:
    """The real watchdog process over a real process standing in for the sensor: stopped past the
    bound, then killed. It stores with its own connection, so a key the model does not name would
    be named on its stderr by the store (store/unknown.py), and the stored rows are checked."""
    db = tmp_path / "wd.db"
    store = SqliteStore(db)
    run = store.begin_run("h", "ebpf", "k", "v", "ktriage record", {})
    store.close()
    sensor = subprocess.Popen(["/bin/sleep", "60"])
    wd = subprocess.Popen([sys.executable, "-m", "ktriage.sources.linux.watchdog", "--sensor-pid", str(sensor.pid),
                           "--db", str(db), "--host", "h", "--token", "t", "--stop-bound", "0.3"],
                          stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wd.stdin is not None
        wd.stdin.write(f"run {run}\n")
        wd.stdin.flush()
        os.kill(sensor.pid, signal.SIGSTOP)
        _stopped(sensor.pid)
        deadline = time.monotonic() + 10
        while not _stored_detections(db) and time.monotonic() < deadline:
            time.sleep(0.1)
        sensor.kill()
        sensor.wait()
        wd.stdin.close()  # end of file without "end": the sensor died
        assert wd.wait(timeout=30) == 0 and wd.stderr is not None
        err = wd.stderr.read()
    finally:
        sensor.kill()
        wd.kill()
    rows = _stored_detections(db)
    assert [r["source"] for r in rows] == ["watchdog:t", "watchdog:t"], err
    assert "stopped" in rows[0]["reason"] and "ended" in rows[1]["reason"]
    assert "not a field of the model" not in err
    assert_kept(rows, "the watchdog's stored detections")


@pytest.mark.root
def test_the_recoverys_detections_keep_the_contract(root: None, tmp_path: Path) -> None:
    from ktriage.sensor.sigmarks import open_reader
    from ktriage.sources.linux.procs import state_and_start
    from ktriage.sources.linux.recovery import unclosed_runs

    gone = subprocess.Popen(["/bin/sleep", "60"])
    found = state_and_start(gone.pid)
    assert found is not None
    gone.kill()
    gone.wait()
    store = SqliteStore(tmp_path / "rec.db")
    marks = open_reader()
    try:
        run = store.begin_run("h", "ebpf", "k", "v", "ktriage record", {})
        store.set_run_process(run, gone.pid, found[1])
        seqs = iter(range(1, 100))
        detections = unclosed_runs(store, "h", marks, "ebpf:t", lambda: next(seqs))
    finally:
        if marks is not None:
            marks.close()
        store.close()
    assert [d["name"] for d in detections] == ["SENSOR_TAMPER_ATTEMPT"]
    assert_kept(detections, "the recovery's detections")
