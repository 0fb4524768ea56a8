"""Store scale: rows/s into PostgreSQL (COPY) and SQLite in the same run, and a
per-process timeline query on a database of --rows events (target ≤ 100 ms).

    sudo .venv/bin/python bench/store_scale.py [--rows 10000000] [--hosts 50]

Events are synthetic but shaped like the sensor's (file 50 %, image 20 %,
process, network and memory 10 % each), spread over --hosts hosts and 20 000
processes per host. PostgreSQL is a real server started for the run (tests/
pgserver.py, its own cluster, fsync off as in CI). The timeline query is the
one an analyst runs on a process: every family's rows of one (host, pid),
newest first, 1000 rows; its median over 50 random processes is reported.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ktriage.store.access import open_store  # noqa: E402
from ktriage.store.readonly import open_readonly  # noqa: E402
from pgserver import PgServer  # noqa: E402

FAMILIES = ("file",) * 5 + ("image",) * 2 + ("process", "network", "memory")


def timeline_sql(p: str) -> str:
    """One host's process's newest 1000 events of every family; p: the connection's parameter marker."""
    union = " UNION ALL ".join(
        f"SELECT '{t}' AS family, ts, seq FROM {t} WHERE host = {p} AND pid = {p}" for t in sorted(set(FAMILIES)))
    return f"SELECT * FROM ({union}) AS t ORDER BY ts DESC LIMIT 1000"


def events(n: int, hosts: int, start: int = 0):
    rnd = random.Random(start)
    t0 = 1_795_000_000_000_000_000
    for i in range(start, start + n):
        family = FAMILIES[i % len(FAMILIES)]
        host = f"host-{i % hosts:03d}"
        yield {"family": family, "host": host, "source": "ebpf:bench", "seq": i, "ts": t0 + i * 1000,
               "pid": rnd.randrange(1, 20000), "tid": 1, "ppid": 1, "uid": 0, "comm": "worker",
               "image": "/usr/bin/worker", "path": f"/var/lib/app/{i % 997}.dat", "op": "open_write"}


def load(target: str, rows: int, hosts: int, batch: int = 20000) -> float:
    store = open_store(target)
    start = time.perf_counter()
    for offset in range(0, rows, batch):
        store.insert(list(events(min(batch, rows - offset), hosts, offset)))
    elapsed = time.perf_counter() - start
    store.close()
    return rows / elapsed


def timeline_ms(target: str, hosts: int) -> float:
    db = open_readonly(target)
    rnd = random.Random(7)
    times = []
    for _ in range(50):
        args = (f"host-{rnd.randrange(hosts):03d}", rnd.randrange(1, 20000))
        t = time.perf_counter()
        db.all(timeline_sql(db.param), args * len(set(FAMILIES)))
        times.append((time.perf_counter() - t) * 1000)
    db.close()
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--rate-rows", type=int, default=1_000_000, help="rows timed for the insert rate")
    ap.add_argument("--hosts", type=int, default=50)
    args = ap.parse_args()
    pg = PgServer(port=55433)
    try:
        with tempfile.TemporaryDirectory(prefix="ktriage-bench-") as tmp:
            result = {"rows": args.rows}
            for name, target in (("sqlite", str(Path(tmp) / "scale.db")), ("postgres", pg.new_database())):
                result[f"{name}_rows_per_s"] = load(target, args.rate_rows, args.hosts)
                if args.rows > args.rate_rows:  # the rest, untimed, to reach the query-size database
                    store = open_store(target)
                    for offset in range(args.rate_rows, args.rows, 50000):
                        store.insert(list(events(min(50000, args.rows - offset), args.hosts, offset)))
                    store.close()
                result[f"{name}_timeline_ms"] = timeline_ms(target, args.hosts)
    finally:
        pg.close()
    print(json.dumps(result))
    print(f"store: PostgreSQL COPY {result['postgres_rows_per_s']:.0f} rows/s vs SQLite "
          f"{result['sqlite_rows_per_s']:.0f} rows/s; timeline on {args.rows} events: PostgreSQL "
          f"{result['postgres_timeline_ms']:.1f} ms, SQLite {result['sqlite_timeline_ms']:.1f} ms (target <= 100 ms)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
