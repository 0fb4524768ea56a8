"""The one pipeline (pipeline/): the bus's drop policy, what a run's counters hold, and the
commands that run through it writing their run."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from ktriage.detect.engine import Engine
from ktriage.detect.rules import builtin_rules
from ktriage.model.families import FAMILIES
from ktriage.pipeline.bus import Bus, Renderer
from ktriage.pipeline.detect import Detector
from ktriage.pipeline.pipeline import Pipeline
from ktriage.sources.replay import ReplaySource, jsonl_events

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "windows"
SMALL = DATA / "EVTX-ATTACK-SAMPLES/Defense Evasion/de_unmanagedpowershell_psinject_sysmon_7_8_10.evtx"
FIXTURES = Path(__file__).parent / "fixtures" / "replay"


def _events(n: int, start: int = 1) -> list[dict[str, Any]]:
    return [{"family": "file", "source": "s", "seq": i, "ts": i} for i in range(start, start + n)]


def test_a_full_queue_keeps_what_it_holds_and_counts_the_newest_it_drops() -> None:
    bus = Bus()
    sub = bus.subscribe("store", capacity=3)
    bus.publish(_events(5))
    bus.publish(_events(2, start=6))
    assert [e["seq"] for e in sub.take(0)] == [1, 2, 3], "the oldest kept, in order"
    assert sub.dropped == 4
    bus.publish(_events(1, start=8))
    assert [e["seq"] for e in sub.take(0)] == [8], "room again once taken"
    assert bus.rows() == [("queue", "store", "dropped", 4)]


def test_a_subscriber_that_leaves_keeps_its_drops_in_the_counters() -> None:
    bus = Bus()
    first, second = Renderer(lambda _b: None), bus.subscribe("clients", capacity=1)
    bus.attach(first)
    bus.publish(_events(3))
    bus.detach(second)
    bus.publish(_events(3))
    assert second.dropped == 2 and bus.rows() == [("queue", "clients", "dropped", 2)], "a renderer drops nothing"


def test_a_renderer_sees_each_batch_with_its_detections_in_the_publishers_thread() -> None:
    events = list(jsonl_events(FIXTURES / "wx_memory.jsonl"))
    batches: list[list[dict[str, Any]]] = []
    source = ReplaySource(events)
    pipeline = Pipeline(source, Detector(Engine(builtin_rules("linux")), fresh_per_source=True))
    pipeline.bus.attach(Renderer(batches.append))
    while not source.exhausted:
        pipeline.step(0)
    assert [len(b) for b in batches] == [len(events) + pipeline.delivered["detection"]]
    assert pipeline.delivered["detection"] >= 1 and batches[0][-1]["family"] == "detection"
    assert ("replay", "", "events", len(events)) in pipeline.rows()
    assert ("detect", "", "delivered", pipeline.delivered["detection"]) in pipeline.rows()


def test_an_ingest_writes_its_run_and_counters(tmp_path: Path) -> None:
    db = tmp_path / "i.db"
    ran = subprocess.run([sys.executable, "-m", "ktriage", "ingest", str(SMALL), "--db", str(db)],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    con = sqlite3.connect(db)
    runs = con.execute("SELECT id, source, ended FROM runs").fetchall()
    assert len(runs) == 1 and runs[0][1] == "ingest" and runs[0][2] is not None
    stats = {(s, f, c): v for s, f, c, v in con.execute("SELECT stage, family, counter, value FROM stats")}
    events = sum(con.execute(f"SELECT count(*) FROM {f}").fetchone()[0] for f in FAMILIES if f != "detection")
    detections = con.execute("SELECT count(*) FROM detection").fetchone()[0]
    assert stats[("ingest", "", "files")] == 1 and stats[("ingest", "", "ingested")] == 1
    assert stats[("read", "", "events")] == events > 0 and stats[("detect", "", "delivered")] == detections
    assert stats[("store", "", "written")] == events + detections
