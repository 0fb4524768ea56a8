"""Fleet mode: two hosts forward into one PostgreSQL; the database is killed
mid-run and restarted; every event arrives exactly once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import psycopg
import pytest

from conftest import Recording

pytestmark = pytest.mark.root

# waits for a number on stdin, opens a file for writing that many times; "exit" ends it
WORKLOAD = ("import os, sys\nprint('ready', flush=True)\n"
            "for line in sys.stdin:\n"
            "    if line.strip() == 'exit':\n        break\n"
            "    for _ in range(int(line)):\n"
            "        os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600))\n"
            "    print('done', flush=True)\n")
TABLES = ("process", "thread", "image", "file", "network", "access", "memory", "module", "api", "signal", "detection")


def _workload(path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WORKLOAD, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _burst(proc: subprocess.Popen, n: int) -> None:
    proc.stdin.write(f"{n}\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "done"


def _central(url: str, host: str) -> dict[str, int]:
    with psycopg.connect(url) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t} WHERE host = %s", (host,)).fetchone()[0] for t in TABLES}


def _local(path) -> dict[str, int]:
    con = sqlite3.connect(path)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        con.close()


def _wait_central(url: str, host: str, files: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _central(url, host)["file"] >= files:
                return
        except psycopg.Error:
            pass  # not reachable, or its tables not made yet: keep waiting
        time.sleep(0.3)
    raise AssertionError(f"{host}: fewer than {files} file events reached the central store")


def test_two_hosts_survive_a_database_restart_exactly_once(pg, tmp_path) -> None:
    url = pg.new_database()
    hosts = {}
    for name in ("host-a", "host-b"):
        work = _workload(tmp_path / f"{name}.txt")
        rec = Recording(tmp_path / f"{name}.db", "--pid", str(work.pid), "--forward", url, "--host-id", name,
                        "--spool", str(tmp_path / f"spool-{name}"))
        hosts[name] = (work, rec)
    for work, _ in hosts.values():
        _burst(work, 300)
    for name in hosts:
        _wait_central(url, name, 300)

    pg.stop("immediate")  # the database dies mid-run
    for work, _ in hosts.values():
        _burst(work, 500)
    time.sleep(2)
    spooled = [list((tmp_path / f"spool-{name}").glob("*.jsonl")) for name in hosts]
    assert all(spooled), "while the database is down, batches wait in each host's spool"

    pg.start()
    pg.wait_ready()
    for work, _ in hosts.values():
        _burst(work, 200)
        work.stdin.write("exit\n")
        work.stdin.flush()
        work.wait(timeout=30)
    for name in hosts:
        _wait_central(url, name, 1000)
    for name, (_, rec) in hosts.items():
        summary = rec.stop()
        assert "spool_left 0" in summary, summary

    for name in hosts:
        central, local = _central(url, name), _local(tmp_path / f"{name}.db")
        assert central == local, f"{name}: central {central} != local {local}"
        assert central["file"] == 1000
    with psycopg.connect(url) as con:
        dupes = con.execute("SELECT count(*) FROM (SELECT host, source, seq FROM file GROUP BY 1, 2, 3 "
                            "HAVING count(*) > 1) d").fetchone()[0]
        hosts_seen = {r[0] for r in con.execute("SELECT DISTINCT host FROM process")}
    assert dupes == 0 and hosts_seen == {"host-a", "host-b"}
    assert not list(tmp_path.glob("spool-*/*.jsonl")), "the spools were replayed and emptied"
