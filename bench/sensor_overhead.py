"""Sensor benchmark: workload slowdown with the sensor on, and pipeline events/s.

Run as root from the repository:  sudo .venv/bin/python bench/sensor_overhead.py

1. Slowdown: bench/workload.c (open/close for write, fork+exec,
   mmap/mprotect/munmap, loopback TCP connect) runs ROUNDS times in each of three configurations, interleaved:
   no sensor, `ktriage record` of the whole host (every family), and
   `ktriage record --pid` of an idle process (targeting: the workload's
   events are filtered out in the kernel). Median ns/iteration per phase are
   compared within this run, so machine noise affects all sides alike.
2. Pipeline: a burst of open-for-write records from a generator through the
   live sensor, decoder and SQLite store in this process; events/s decoded and
   stored, measured from the first record polled to the last one stored.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"


def compile_workload() -> Path:
    OUT.mkdir(exist_ok=True)
    exe = OUT / "workload"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(HERE / "workload.c")], check=True)
    return exe


def run_workload(exe: Path, scale: int, tmp: str) -> dict[str, tuple[int, float]]:
    """phase -> (iterations, ns per iteration)"""
    out = subprocess.run([str(exe), os.path.join(tmp, "wl.tmp"), str(scale)], capture_output=True, text=True,
                         check=True).stdout
    return {phase: (int(n), float(ns)) for phase, n, ns in (line.split() for line in out.splitlines())}


def start_recorder(db: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "ktriage", "record", "--db", db, "--summary-interval", "3600",
                             *args], stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("ktriage: recording"):
            return proc
    raise RuntimeError("recorder did not start")


def stop_recorder(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    proc.wait()
    return rest


def _measure(exe: Path, scale: int, tmp: str, db: str | None, *args: str) -> tuple[dict[str, tuple[int, float]], float]:
    rec = start_recorder(db, *args) if db else None
    t0 = time.monotonic()
    result = run_workload(exe, scale, tmp)
    busy = time.monotonic() - t0
    if rec:
        stop_recorder(rec)
    return result, busy


def slowdown(rounds: int, scale: int) -> dict:
    exe = compile_workload()
    runs: dict[str, dict[str, list[float]]] = {"baseline": {}, "full": {}, "targeted_idle": {}}
    iterations: dict[str, int] = {}
    busy = 0.0
    idle = subprocess.Popen(["sleep", "3600"])
    with tempfile.TemporaryDirectory(prefix="ktriage-bench-") as tmp:
        full_db, idle_db = os.path.join(tmp, "full.db"), os.path.join(tmp, "idle.db")
        for _ in range(rounds):
            for mode, db, args in (("baseline", None, ()), ("full", full_db, ()),
                                   ("targeted_idle", idle_db, ("--pid", str(idle.pid)))):
                result, seconds = _measure(exe, scale, tmp, db, *args)
                busy += seconds if mode == "full" else 0
                for phase, (n, ns) in result.items():
                    iterations[phase] = n
                    runs[mode].setdefault(phase, []).append(ns)
        con = sqlite3.connect(full_db)
        events = con.execute("SELECT sum(value) FROM stats WHERE stage='decode' AND counter='received'").fetchone()[0]
        lost = con.execute("SELECT sum(value) FROM stats WHERE stage='bpf' AND counter='lost'").fetchone()[0]
    idle.kill()
    base = {p: statistics.median(v) for p, v in runs["baseline"].items()}
    phases = {p: {"iterations": iterations[p], "baseline_ns": base[p],
                  **{f"{m}_ratio": statistics.median(runs[m][p]) / base[p] for m in ("full", "targeted_idle")}}
              for p in base}
    return {"phases": phases, "events": events, "lost": lost, "events_per_s_during_workload": events / busy,
            **{f"{m}_total_ratio": _total(phases, m) for m in ("full", "targeted_idle")}}


def _total(phases: dict[str, dict], mode: str) -> float:
    """The whole workload's runtime ratio: phases weighted by their baseline time."""
    base = sum(p["baseline_ns"] * p["iterations"] for p in phases.values())
    return sum(p["baseline_ns"] * p["iterations"] * p[f"{mode}_ratio"] for p in phases.values()) / base


def pipeline(count: int) -> dict:
    from ktriage.pipeline.bus import Bus
    from ktriage.sensor.sensor import Sensor, SensorOptions
    from ktriage.sources.linux.decode import Decoder, boot_to_epoch_offset
    from ktriage.sources.linux.procs import ProcessTable
    from ktriage.store.sqlite import SqliteStore

    with tempfile.TemporaryDirectory(prefix="ktriage-bench-") as tmp:
        gen = subprocess.Popen([sys.executable, "-m", "ktriage.selftest.generators", "burst", tmp, str(count)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        sensor = Sensor(SensorOptions(ring_bytes=256 << 20, pids={gen.pid: 0}))
        sensor.start()
        store = SqliteStore(os.path.join(tmp, "pipe.db"))
        decoder = Decoder("bench", ProcessTable(), boot_to_epoch_offset())
        bus = Bus()
        sub = bus.subscribe("store", 10_000_000)
        gen.stdin.write("go\n")
        gen.stdin.flush()
        received = stored = 0
        first = None
        decode_s = store_s = 0.0
        while received < count:
            raws = sensor.poll(100)
            if not raws:
                if gen.poll() is not None and received:
                    break
                continue
            first = first or time.monotonic()
            t = time.monotonic()
            bus.publish(decoder.decode_many(raws))
            decode_s += time.monotonic() - t
            t = time.monotonic()
            stored += store.insert(sub.take(0))
            store_s += time.monotonic() - t
            received = decoder.records["file"]
        elapsed = time.monotonic() - (first or time.monotonic())
        _, lost = sensor.counters()
        sensor.close()
        store.close()
        gen.wait()
    return {"records": received, "stored": stored, "lost": sum(lost.values()),
            "events_per_s": stored / elapsed, "decode_only_per_s": received / decode_s,
            "store_only_per_s": stored / store_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--burst", type=int, default=300_000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench needs root (it loads the sensor)", file=sys.stderr)
        return 2
    result = {"date": time.strftime("%Y-%m-%d"), "kernel": platform.release(), "cpus": os.cpu_count(),
              "slowdown": slowdown(args.rounds, args.scale), "pipeline": pipeline(args.burst)}
    print(json.dumps(result, indent=2))
    for phase, r in result["slowdown"]["phases"].items():
        print(f"{phase:<12} baseline {r['baseline_ns']:>12.0f} ns  full capture x{r['full_ratio']:.3f}  "
              f"targeted idle pid x{r['targeted_idle_ratio']:.3f}", file=sys.stderr)
    s = result["slowdown"]
    print(f"whole workload: full capture x{s['full_total_ratio']:.3f}, targeted idle pid "
          f"x{s['targeted_idle_total_ratio']:.3f}", file=sys.stderr)
    p = result["pipeline"]
    print(f"pipeline: {p['events_per_s']:.0f} events/s decoded+stored "
          f"(decode alone {p['decode_only_per_s']:.0f}/s, store alone {p['store_only_per_s']:.0f}/s), "
          f"lost {p['lost']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
