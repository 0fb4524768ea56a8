"""Shared fixtures: a real `ktriage record` process and the behaviour generators.

Tests that load BPF programs need root; run the suite with `sudo scripts/test`.
They fail (not skip) without root, so a green run always means they ran.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

READY = "ktriage: recording"


def ktriage(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ktriage", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def windows_data() -> Path:
    """The dev Windows samples (../shared/data/windows, or $KTRIAGE_WINDOWS_DATA); a module without them is
    skipped, except in CI, where shared/ is beside the clone and missing data is a failure."""
    data = Path(os.environ.get("KTRIAGE_WINDOWS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" /
                               "windows"))
    if not data.is_dir():
        if os.environ.get("CI"):
            raise RuntimeError(f"the Windows samples are not at {data}")
        pytest.skip(f"the Windows samples are not at {data}", allow_module_level=True)
    return data


@contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real filesystem of that size at mount (created), unmounted afterwards (root only)."""
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "ktriage-test", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def generate(name: str, *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "ktriage.selftest.generators", name, *args],
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])


class Recording:
    """A `ktriage record` child process writing to db. Its stderr is read all along (a recorder
    that prints detections would otherwise block on a full pipe)."""

    def __init__(self, db: Path, *args: str) -> None:
        self.db = db
        self.proc = subprocess.Popen([sys.executable, "-m", "ktriage", "record", "--db", str(db),
                                      "--summary-interval", "1", *args],
                                     stderr=subprocess.PIPE, text=True)
        self.stderr_lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(90) or self.proc.poll() is not None and not self._started():
            self.proc.kill()
            self._reader.join(10)
            raise AssertionError("recorder did not start:\n" + "".join(self.stderr_lines))
        self._start_line = len(self.stderr_lines)

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            if line.startswith(READY):
                self._ready.set()
        self._ready.set()

    def _started(self) -> bool:
        return any(line.startswith(READY) for line in self.stderr_lines)

    def stop(self, sig: int = signal.SIGINT) -> str:
        """Stop the recorder; returns its stderr after the ready line."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=60)
        self._reader.join(10)
        return "".join(self.stderr_lines[self._start_line:])

    def rows(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def wait_rows(self, sql: str, params: tuple = (), count: int = 1, timeout: float = 15) -> list[sqlite3.Row]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.rows(sql, params)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


@pytest.fixture(scope="session")
def root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test loads BPF programs and needs root: run the suite with `sudo scripts/test`")


@pytest.fixture(scope="session")
def pg(root: None) -> Iterator[object]:
    """A real PostgreSQL server (needs root to run it as the postgres user)."""
    from pgserver import PgServer

    server = PgServer()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgres"])
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each kind: the store tests run against both, with the same expectations."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return request.getfixturevalue("pg").new_database()


@pytest.fixture(scope="session")
def host_recording(root: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    """One whole-host recording shared by the family tests."""
    rec = Recording(tmp_path_factory.mktemp("host") / "host.db")
    yield rec
    rec.stop()
