"""Windows ingest rate: EVTX → normalized events + detections stored, against the
raw parse rate of the `evtx` package measured in the same run (the ceiling).

    .venv/bin/python bench/windows_ingest.py [--rounds 3]

Corpus: every .evtx under ../shared/data/windows. Raw: iterate records_json()
without decoding. End to end: `ktriage ingest` into a fresh SQLite database
(parse, JSON decode, map, engine, store). Rates are records read per second;
the median of the rounds is reported.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import evtx

from ktriage.ingest import Ingester

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "windows"


def raw_rate(files: list[Path]) -> tuple[int, float]:
    start, n = time.perf_counter(), 0
    for f in files:
        records = evtx.PyEvtxParser(str(f)).records_json()
        while True:
            try:
                next(records)
            except StopIteration:
                break
            except RuntimeError:
                continue
            n += 1
    return n, n / (time.perf_counter() - start)


def ingest_rate(files: list[Path]) -> tuple[int, int, float]:
    with tempfile.TemporaryDirectory(prefix="ktriage-bench-") as tmp:
        start = time.perf_counter()
        results = Ingester(str(Path(tmp) / "win.db"), err=io.StringIO()).run(files)
        elapsed = time.perf_counter() - start
    read = sum(r.events + r.unmapped for r in results)
    return read, sum(r.detections for r in results), read / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    files = sorted(DATA.rglob("*.evtx"))
    raws, ends = [], []
    for _ in range(args.rounds):
        n, rate = raw_rate(files)
        raws.append(rate)
        read, detections, rate = ingest_rate(files)
        ends.append(rate)
    result = {"files": len(files), "records": n, "detections": detections, "raw_parse_per_s": statistics.median(raws),
              "end_to_end_per_s": statistics.median(ends)}
    result["ratio"] = result["end_to_end_per_s"] / result["raw_parse_per_s"]
    print(json.dumps(result))
    print(f"windows ingest: {result['end_to_end_per_s']:.0f} records/s end to end vs {result['raw_parse_per_s']:.0f}/s "
          f"raw evtx parse ({result['ratio']:.2f} of the ceiling; target >= 100 k/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
