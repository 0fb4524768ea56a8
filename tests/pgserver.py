"""A real PostgreSQL server for the tests: its own cluster in a temporary
directory, on a Unix socket only, run as the postgres user (Debian package)."""

from __future__ import annotations

import glob
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql): scripts/setup installs it")
    return found[-1]


def _as_postgres(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, check=True)


class PgServer:
    def __init__(self, port: int = 55432) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ktriage-pg-"))
        self.data = self.dir / "data"
        self.port = port
        shutil.chown(self.dir, "postgres", "postgres")
        _as_postgres(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.dir}&port={self.port}"

    def start(self) -> None:
        _as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "start", "-o",
                     f"-p {self.port} -k {self.dir} -c listen_addresses='' -c fsync=off")

    def stop(self, mode: str = "fast") -> None:
        _as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def new_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.2)
        raise TimeoutError("PostgreSQL did not come back")

    def close(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)
