"""Reading the ring buffer: records already there are returned without waiting for a wakeup."""

from __future__ import annotations

import time

import pytest

from ktriage.commands.watch import Launch
from ktriage.sensor import layouts
from ktriage.sensor.sensor import Sensor, SensorOptions

pytestmark = pytest.mark.root

WAIT_MS = 5000


def test_poll_returns_records_already_in_the_ring_at_once(root: None, tmp_path) -> None:
    """touch's records are all of bulk families, which announce themselves with no wakeup; a poll
    that found them and then slept until the next wakeup would hold them for its whole timeout
    (a detection they complete with them)."""
    sensor = Sensor(SensorOptions(targeted=True))
    sensor.start()
    launch = Launch(["touch", str(tmp_path / "written")])
    try:
        sensor.set_targets({launch.pid: 0})
        launch.release()
        while not launch.finished():
            time.sleep(0.01)
        sent_before, _ = sensor.counters()
        t0 = time.monotonic()
        records = sensor.poll(WAIT_MS)
        waited = time.monotonic() - t0
    finally:
        launch.abandon()
        sensor.close()
    kinds = {r[16] | r[17] << 8 for r in records}
    assert layouts.BY_NAME["file"].kind in kinds and layouts.BY_NAME["exit"].kind in kinds
    assert sum(sent_before.values()) == len(records)
    assert waited < WAIT_MS / 1000 / 2, f"poll held records that were already there for {waited:.1f} s"
