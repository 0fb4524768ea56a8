"""Replay: recorded event streams give exactly the expected detections,
without root; and replaying a stored recording equals what was detected live."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from conftest import Recording, generate, ktriage
from ktriage.detect.rules import builtin_rules
from ktriage.sources.replay import jsonl_events, replay

FIXTURES = Path(__file__).parent / "fixtures" / "replay"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_gives_exactly_the_expected_detections(name: str) -> None:
    found = replay(list(jsonl_events(FIXTURES / f"{name}.jsonl")), builtin_rules())
    assert sorted(d["name"] for d in found) == EXPECTED[name]
    for d in found:  # every detection explains itself with events that exist in the stream
        ids = json.loads(d["event_ids"])
        assert ids and d["trigger_id"] in ids


def test_detect_cli_jsonl_contract() -> None:
    out = ktriage("detect", "--events", str(FIXTURES / "thread_hijack.jsonl"), "--format", "jsonl")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert {"name", "severity", "actor_pid", "target_pid", "ts", "reason", "event_ids", "technique"} <= set(records[0])
    hijack = next(r for r in records if r["name"] == "THREAD_HIJACK_INTENT")
    assert hijack["technique"] == ["T1055.003", "T1055.008"] and len(hijack["event_ids"]) == 3
    high = ktriage("detect", "--events", str(FIXTURES / "thread_hijack.jsonl"), "--format", "jsonl",
                   "--min-severity", "6")
    assert [json.loads(x)["name"] for x in high.stdout.splitlines()] == [
        "POSSIBLE_PROCESS_HOLLOWING_OR_INJECTION_INTENT_CHAIN"]


def test_bad_event_file_is_one_clear_line(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"family": "process", "ts": 1, "seq": 1}\nnot json\n')
    out = ktriage("detect", "--events", str(bad))
    assert out.returncode != 0 and out.stderr.strip() == f"ktriage: error: {bad}:2: not a JSON line: Expecting value"


@pytest.mark.root
def test_replaying_a_recording_equals_live_detection(root: None, tmp_path) -> None:
    rec = Recording(tmp_path / "live.db")
    for name in ("thread_hijack", "hollow_child", "wx_memory", "memfd_exec", "persistence"):
        generate(name)
    rec.wait_rows("SELECT 1 FROM detection WHERE name='PERSISTENCE_FILE_WRITE'", timeout=15)
    printed = [line for line in rec.stop().splitlines() if line.startswith("ktriage: detection: ")]
    con = sqlite3.connect(tmp_path / "live.db")
    live = sorted(con.execute("SELECT name, actor_pid, target_pid, event_ids FROM detection").fetchall(),
                  key=repr)
    out = ktriage("detect", "--db", str(tmp_path / "live.db"), "--format", "jsonl")
    replayed = sorted(((r["name"], r["actor_pid"], r["target_pid"], json.dumps(r["event_ids"]))
                       for r in map(json.loads, out.stdout.splitlines())), key=repr)
    assert len(live) >= 7
    assert replayed == live
    assert len(printed) == len(live)  # each shown as it happened, on stderr
    assert any("sev 7  PROCESS_HOLLOWING_MARK_CHAIN_STRONG" in line for line in printed), printed
    stored = ktriage("detections", "--db", str(tmp_path / "live.db"), "--format", "jsonl", "--min-severity", "7")
    assert {json.loads(x)["name"] for x in stored.stdout.splitlines()} >= {"PROCESS_HOLLOWING_MARK_CHAIN_STRONG",
                                                                          "FILELESS_EXECUTION"}
