"""Broker fan-out: events/s delivered to 1, 3 and 10 clients, and end-to-end latency.

    sudo .venv/bin/python bench/broker_fanout.py [--events 20000]

A real `ktriage serve` runs; N clients (threads, the Python SDK, push stream)
subscribe to one process that then opens a file for writing --events times as
fast as it can (throughput), and then 2000 times at 500/s (latency without
saturation). Delivered events/s = events delivered to all clients / time from
the start to the last delivery; latency = delivery time - the kernel timestamp
of the event (p50/p99 over every delivered event).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ktriage.client import Client

BURST = ("import os, sys, time\nprint('ready', flush=True)\nsys.stdin.readline()\n"
         "gap = 1 / float(sys.argv[3]) if float(sys.argv[3]) else 0\n"
         "for _ in range(int(sys.argv[2])):\n    os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600))\n"
         "    gap and time.sleep(gap)\n")


def run(sock: str, clients: int, events: int, tmp: str, rate: float = 0) -> dict:
    target = subprocess.Popen([sys.executable, "-c", BURST, str(Path(tmp) / "f"), str(events), str(rate)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    target.stdout.readline()
    conns = [Client(sock) for _ in range(clients)]
    for c in conns:
        c.subscribe(target.pid, streams=["file"], queue=65536)
    latencies: list[float] = []
    done_at: list[float] = []
    lock = threading.Lock()

    def consume(c: Client) -> None:
        got = []
        for rec in c.events():
            got.append((time.time_ns() - rec.data["ts"]) / 1e6)
            if len(got) == events:
                break
        with lock:
            latencies.extend(got)
            done_at.append(time.monotonic())

    threads = [threading.Thread(target=consume, args=(c,), daemon=True) for c in conns]
    for t in threads:
        t.start()
    start = time.monotonic()
    target.stdin.write("go\n")
    target.stdin.flush()
    for t in threads:
        t.join(timeout=120)
    target.wait()
    for c in conns:
        c.close()
    latencies.sort()
    return {"clients": clients, "rate": rate or "burst", "delivered": len(latencies),
            "events_per_s": len(latencies) / (max(done_at) - start),
            "p50_ms": statistics.median(latencies), "p99_ms": latencies[int(len(latencies) * 0.99) - 1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ktriage-bench-") as tmp:
        sock = str(Path(tmp) / "broker.sock")
        broker = subprocess.Popen([sys.executable, "-m", "ktriage", "serve", "--socket", sock],
                                  stdout=subprocess.PIPE, text=True)
        broker.stdout.readline()
        try:
            results = [run(sock, n, args.events, tmp) for n in (1, 3, 10)]  # throughput: a burst
            results += [run(sock, n, 2000, tmp, rate=500) for n in (1, 3, 10)]  # latency: 500 events/s
        finally:
            broker.terminate()
            broker.wait()
    for r in results:
        print(json.dumps(r))
        print(f"{r['clients']:>2} clients, {r['rate']}: {r['events_per_s']:.0f} events/s delivered, "
              f"latency p50 {r['p50_ms']:.1f} ms"
              f" p99 {r['p99_ms']:.1f} ms ({r['delivered']} delivered)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
