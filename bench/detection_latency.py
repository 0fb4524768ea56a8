"""Detection latency: from the syscall (the kernel's timestamp of the event that
completes a detection) to the detection committed in the SQLite store.

Run as root from the repository:  sudo .venv/bin/python bench/detection_latency.py [--count 200]

Two generators, each forking COUNT children 10 ms apart, under the live
pipeline of `ktriage record` (sensor, decoder, engine, bus, store writer) run
in this process with the writer noting when each batch is committed:
bench/wx.c makes anonymous memory writable then executable (WX_MEMORY, from
a memory record), bench/fileless.c executes a copy of /bin/true from a memfd
(FILELESS_EXECUTION, from an exec record: a bulk family, read on the timer
unless the kernel marks the record urgent, as it does a fileless exec).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ktriage.commands.watch import Launch
from ktriage.sensor.sensor import SensorOptions
from ktriage.sources.linux.live import POLL_MS, live_pipeline
from ktriage.store.sqlite import SqliteStore
from ktriage.store.writer import StoreWriter

HERE = Path(__file__).resolve().parent


class TimedWriter(StoreWriter):
    """Notes the commit time of every detection it stores."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.latencies_ms: list[float] = []

    def _write(self, events: list[dict]) -> None:
        super()._write(events)
        now = time.time_ns()
        self.latencies_ms += [(now - e["ts"]) / 1e6 for e in events if e["family"] == "detection"]


GENERATORS = {
    "wx": "WX_MEMORY, completed by a memory record (a family that wakes the reader at once)",
    "fileless": "FILELESS_EXECUTION, completed by an exec record (bulk family; the kernel marks it urgent)",
}


def measure(count: int, generator: str = "wx") -> dict:
    (HERE / "out").mkdir(exist_ok=True)
    exe = HERE / "out" / generator
    subprocess.run(["cc", "-O2", "-o", str(exe), str(HERE / f"{generator}.c")], check=True)
    with tempfile.TemporaryDirectory(prefix="ktriage-bench-") as tmp:
        live = live_pipeline(SensorOptions(targeted=True))
        live.pipeline.start()
        bus = live.pipeline.bus
        writer = TimedWriter(SqliteStore(os.path.join(tmp, "lat.db")), bus.subscribe("store", 1_000_000))
        writer.start()
        launch = Launch([str(exe), str(count)])  # held before exec until it is a target
        live.source.sensor.set_targets({launch.pid: 0})
        launch.release()
        while not launch.finished():
            live.pipeline.step(POLL_MS)  # as `ktriage record` reads
        live.pipeline.step(100)
        live.pipeline.step(0)
        bus.close()
        writer.join()
        live.source.close()
    lat = sorted(writer.latencies_ms)
    if not lat:
        raise RuntimeError(f"{generator}: no detection was stored")
    return {"generator": generator, "detections": len(lat), "expected": count, "p50_ms": statistics.median(lat),
            "p99_ms": lat[max(0, int(len(lat) * 0.99) - 1)], "max_ms": lat[-1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench needs root (it loads the sensor)", file=sys.stderr)
        return 2
    for generator in GENERATORS:
        result = measure(args.count, generator)
        print(json.dumps(result))
        print(f"detection latency ({generator}): {result['detections']} detections, p50 {result['p50_ms']:.2f} ms, "
              f"p99 {result['p99_ms']:.2f} ms, max {result['max_ms']:.2f} ms (target p99 <= 20 ms)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
