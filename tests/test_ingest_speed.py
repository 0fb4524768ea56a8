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

from conftest import ktriage
from ktriage.sources import jsonfile
from ktriage.store import schema
from test_windows import DATA  # skips this module too when the samples are missing

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
    assert "ktriage.ingest" in names and "evtx" in names, "the import list was read"
    assert sorted(n for n in names if NOT_FOR_INGEST.match(n)) == []


# -- JSON lines: the exactness check lets 64-bit numbers through -----------------------------------

@pytest.mark.parametrize("number, exact_path", [
    (-(1 << 63), False), ((1 << 64) - 1, False), (9_999_999_999_999_999_999, False),  # orjson keeps these
    ((1 << 64), True), (-(1 << 63) - 1, True), (10 ** 30, True)])  # these it would make floats
def test_numbers_of_19_digits_and_more_are_exact_and_64_bit_ones_take_orjson(number: int, exact_path: bool) -> None:
    line = b'{"Keywords": %d, "Hashes": "SHA1=%d", "n": [%d]}' % (number, number, number)
    assert jsonfile._long_number(line, line.translate(jsonfile._SHAPE)) is exact_path
    assert jsonfile.decode(line, 64) == {"Keywords": number, "Hashes": f"SHA1={number}", "n": [number]}
