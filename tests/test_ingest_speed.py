"""Issue 14, speed of `ktriage ingest`: what its start-up loads, and the parallel workers
(--jobs) giving the same events and detections as the one-process path.

Times are measured in bench/windows_ingest.py, never here: these tests check structure
(which modules a SQLite ingest imports) and results (rows stored, lines reported)."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_windows import DATA  # skips this module too when the samples are missing

from conftest import ktriage
from ktriage.commands.ingest_pool import Job, ReaderPool
from ktriage.commands.ingest_read import FileReader
from ktriage.detect.engine import Engine
from ktriage.detect.rules import builtin_rules
from ktriage.sources.reading import ReadLimits
from ktriage.sources.windows import jsonfile
from ktriage.store import schema

SMALL = DATA / "EVTX-ATTACK-SAMPLES/Defense Evasion/de_unmanagedpowershell_psinject_sysmon_7_8_10.evtx"
# what a SQLite ingest has no use for: the live sensor, the PostgreSQL driver, the broker, the UI
NOT_FOR_INGEST = re.compile(r"^(psycopg|psycopg_binary|ktriage\.sensor|ktriage\.live|ktriage\.broker|ktriage\.ui|"
                            r"starlette|uvicorn|asyncio)(\.|$)")


def _imported(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the CLI with -X importtime; the modules it imported (every process it ran writes to stderr)."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "ktriage", *args], capture_output=True,
                         text=True, timeout=120)
    names = {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    return out, names - {"package"}


def test_a_sqlite_ingest_imports_neither_the_sensor_nor_psycopg(tmp_path: Path) -> None:
    out, names = _imported("ingest", str(SMALL), "--db", str(tmp_path / "t.db"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ktriage.sources.windows.logfile" in names and "evtx" in names, "the import list was read"
    assert sorted(n for n in names if NOT_FOR_INGEST.match(n)) == []


def test_workers_import_nothing_more(tmp_path: Path) -> None:
    out, names = _imported("ingest", str(DATA / "EVTX-ATTACK-SAMPLES" / "Persistence"), "--db", str(tmp_path / "t.db"),
                           "--jobs", "2")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ktriage.commands.ingest_pool" in names, "the workers ran"
    assert sorted(n for n in names if NOT_FOR_INGEST.match(n)) == []


# -- the same rows with one job and with several ------------------------------------------------

@pytest.fixture(params=["sqlite", "postgres"])
def two_targets(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """Two fresh databases of one kind."""
    if request.param == "sqlite":
        return str(tmp_path / "one.db"), str(tmp_path / "two.db")
    pg = request.getfixturevalue("pg")
    return pg.new_database(), pg.new_database()


def _connect(target: str) -> Any:
    return psycopg.connect(target) if target.startswith("postgresql://") else sqlite3.connect(target)


def _stored(target: str) -> dict[str, list[tuple]]:
    """Every event and detection row (SQLite: with its row id, so the order of storage counts too),
    and what is marked ingested."""
    con = _connect(target)
    try:
        out = {}
        for table, cols in schema.event_tables().items():
            names = ", ".join(schema.ident(c, "postgres" if target.startswith("postgresql://") else "sqlite")
                              for c, _ in cols)
            first = "" if target.startswith("postgresql://") else "id, "
            out[table] = [tuple(r) for r in con.execute(f"SELECT {first}{names} FROM {table} ORDER BY source, seq")]
        out["ingested"] = [tuple(r) for r in con.execute(
            "SELECT sha256, path, source, events, detections, errors, unmapped FROM ingested ORDER BY sha256")]
        return out
    finally:
        con.close()


def test_jobs_1_and_2_store_the_same_events_and_detections(two_targets: tuple[str, str]) -> None:
    one, two = two_targets
    serial = ktriage("ingest", str(DATA), "--db", one, "--jobs", "1", timeout=300)
    parallel = ktriage("ingest", str(DATA), "--db", two, "--jobs", "2", timeout=300)
    assert serial.returncode == parallel.returncode == 6, parallel.stderr[-2000:]  # three damaged samples
    assert parallel.stderr == serial.stderr, "the same report, line by line, in the same order"
    stored_one, stored_two = _stored(one), _stored(two)
    assert len(stored_one["detection"]) > 150 and len(stored_one["ingested"]) == 97, "the dev set was read"
    for table in stored_one:
        assert stored_two[table] == stored_one[table], table


# -- a bad file, a dead worker --------------------------------------------------------------------

SYSMON = "Microsoft-Windows-Sysmon/Operational"


def _lines(path: Path, count: int) -> Path:
    line = ('{"Channel": "%s", "EventID": 1, "@timestamp": "2020-01-01T00:00:%02d.%06dZ", "Computer": "H", '
            '"Image": "C:\\\\w\\\\p%d.exe", "ProcessId": %d}\n')
    path.write_text("".join(line % (SYSMON, i // 1_000_000 % 60, i % 1_000_000, i, i + 4) for i in range(count)))
    return path


def _evtx_copy(source: Path, target: Path, mark: int) -> Path:
    data = bytearray(source.read_bytes())
    data[4000] = mark  # the header block's unused padding: another SHA-256, the same records
    target.write_bytes(bytes(data))
    return target


def test_a_bad_file_read_by_a_worker_is_reported_as_in_one_process(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _evtx_copy(SMALL, folder / "a-good.evtx", 1)
    (folder / "b-cut.evtx").write_bytes(SMALL.read_bytes()[:40_000])
    (folder / "c-not-a-log.evtx").write_bytes(b"MZ\x90\x00" + bytes(600))
    _lines(folder / "d-lines.json", 20).write_text(_lines(folder / "d-lines.json", 20).read_text() + "{oops\n[1]\n")
    (folder / "e-empty.json").write_bytes(b"")
    (folder / "f-link.evtx").symlink_to(SMALL)
    _evtx_copy(SMALL, folder / "g-same-as-a.evtx", 1)
    reports = []
    for _ in ("first", "again"):  # the second time, every readable file is already ingested
        serial = ktriage("ingest", str(folder), "--db", str(tmp_path / "one.db"), "--jobs", "1")
        parallel = ktriage("ingest", str(folder), "--db", str(tmp_path / "two.db"), "--jobs", "2")
        assert parallel.returncode == serial.returncode == 6 and "Traceback" not in parallel.stderr
        assert parallel.stderr == serial.stderr
        reports.append(parallel.stderr.splitlines())
    first, again = reports
    for lines, name, what in ((first, "b-cut.evtx", "chunk 0"), (first, "c-not-a-log.evtx", "not ingested"),
                              (first, "d-lines.json:21", "not JSON"), (first, "e-empty.json", "not ingested"),
                              (first, "f-link.evtx", "symbolic link"), (first, "g-same-as-a.evtx", "already ingested"),
                              (again, "a-good.evtx", "already ingested")):
        assert any(name in line and what in line for line in lines), (name, lines)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
    return found


def _reading(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_a_worker_killed_while_it_reads_a_file_is_reported_and_the_rest_stored(tmp_path: Path) -> None:
    """Every worker found reading big.json is killed (as an OOM killer or a crash in native code would):
    the file is read again alone, its worker killed again, and it is reported; the others are stored."""
    folder = tmp_path / "in"
    folder.mkdir()
    big = _lines(folder / "big.json", 60_000)
    smalls = [_evtx_copy(SMALL, folder / f"small{i}.evtx", i + 1) for i in range(4)]
    db = tmp_path / "t.db"
    proc = subprocess.Popen([sys.executable, "-m", "ktriage", "ingest", "--jobs", "2", "--db", str(db), str(folder)],
                            stderr=subprocess.PIPE, text=True)
    killed: set[int] = set()
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        for child in _children(proc.pid):
            if child not in killed and _reading(child, big):
                os.kill(child, signal.SIGKILL)
                killed.add(child)
        time.sleep(0.01)
    stderr = proc.communicate(timeout=60)[1]
    assert len(killed) == 2, f"the worker and the one that read it again alone: {stderr[-2000:]}"
    assert proc.returncode == 6 and "Traceback" not in stderr, stderr[-2000:]
    assert f"ktriage: {big}: not ingested: the worker process reading it died (killed by SIGKILL): nothing of it " \
           "stored" in stderr.splitlines()
    con = sqlite3.connect(db)
    marked = {r[0] for r in con.execute("SELECT path FROM ingested")}
    assert marked == {str(s) for s in smalls}, "the other files, in flight or not, were stored"
    assert con.execute("SELECT count(*) FROM process WHERE image LIKE 'C:\\w\\p%'").fetchone()[0] == 0


# -- JSON lines: the exactness check lets 64-bit numbers through -----------------------------------

@pytest.mark.parametrize("number, exact_path", [
    (-(1 << 63), False), ((1 << 64) - 1, False), (9_999_999_999_999_999_999, False),  # orjson keeps these
    ((1 << 64), True), (-(1 << 63) - 1, True), (10 ** 30, True)])  # these it would make floats
def test_numbers_of_19_digits_and_more_are_exact_and_64_bit_ones_take_orjson(number: int, exact_path: bool) -> None:
    line = b'{"Keywords": %d, "Hashes": "SHA1=%d", "n": [%d]}' % (number, number, number)
    assert jsonfile._long_number(line, line.translate(jsonfile._SHAPE)) is exact_path
    assert jsonfile.decode(line, 64) == {"Keywords": number, "Hashes": f"SHA1={number}", "n": [number]}


def test_the_pool_holds_a_bounded_number_of_files_and_bytes(tmp_path: Path) -> None:
    """At most 4 files per worker in flight; past the byte budget only one per worker; results in order."""
    files = [_evtx_copy(SMALL, tmp_path / f"f{i}.evtx", i + 1) for i in range(10)]
    reader = FileReader(Engine(builtin_rules("windows")), ReadLimits())
    size = SMALL.stat().st_size
    with ReaderPool(2, reader, budget=10 * size) as pool:
        put = 0
        while not pool.full():
            pool.put(Job(files[put], put + 1, f"{put:064d}", size))
            put += 1
        assert put == 8, "the window: 4 per worker"
        taken = [pool.take() for _ in range(put)]
    assert [j.index for j in taken] == list(range(1, 9)) and all(j.outcome.events for j in taken)
    with ReaderPool(2, reader, budget=size) as pool:
        pool.put(Job(files[0], 1, "0" * 64, size))
        assert not pool.full(), "a worker is still free"
        pool.put(Job(files[1], 2, "1" * 64, size))
        assert pool.full(), "past the byte budget with every worker busy"
        pool.take()
        assert not pool.full()
        pool.put(Job(files[2], 3, None, 0, outcome="refused"))  # nothing to read: no bytes, no worker
        assert not pool.full() and pool.take().outcome.events and pool.take().outcome == "refused"
