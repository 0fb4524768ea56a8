"""A recording onto a disk that fills up: the error names the full disk, the
run's counters are kept, and every event is accounted for (stored, failed or
dropped; the kernel's sent - received = lost still holds)."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_windows import ATTACKS

from conftest import Recording, ktriage, tmpfs
from ktriage.model.families import FAMILIES

pytestmark = pytest.mark.root


@pytest.fixture
def small_disk(root: None, tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB filesystem (tmpfs) that a recording fills within seconds."""
    with tmpfs(tmp_path / "small", "2m") as mount:
        yield mount


def _fill(rec: Recording, work: Path, timeout: float = 60) -> None:
    """Writes files (each open for writing is a file event) until the recorder gives up."""
    deadline = time.monotonic() + timeout
    n = 0
    while rec.proc.poll() is None and time.monotonic() < deadline:
        (work / f"f{n % 50}").write_text("x")
        n += 1


def _printed_counters(summary: str) -> dict[tuple[str, str, str], int]:
    """The end-of-run summary's counters, keyed like the stats table."""
    out: dict[tuple[str, str, str], int] = {}
    for line in summary.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] in FAMILIES and all(p.isdigit() for p in parts[1:]):
            fam, events, records, sent, lost = parts[0], *map(int, parts[1:])
            out.update({("decode", fam, "events"): events, ("decode", fam, "received"): records,
                        ("bpf", fam, "sent"): sent, ("bpf", fam, "lost"): lost})
        elif line.startswith("detections "):
            out[("detect", "", "delivered")] = int(parts[1])
        elif line.startswith("decode errors "):
            found = dict(re.findall(r"(queue dropped|stored|store failed) (\d+)", line))
            out.update({("queue", "store", "dropped"): int(found["queue dropped"]),
                        ("store", "", "written"): int(found["stored"]),
                        ("store", "", "failed"): int(found["store failed"])})
    return out


def test_disk_full_is_named_and_every_event_is_accounted_for(small_disk: Path, tmp_path: Path) -> None:
    rec = Recording(small_disk / "rec.db")
    _fill(rec, tmp_path)
    rest = rec.stop()
    stderr = "".join(rec.stderr_lines)
    assert rec.proc.returncode == 5, stderr
    assert "disk full" in rest and "cannot rollback" not in stderr
    error = [line for line in rest.splitlines() if line.startswith("ktriage: error: ")]
    assert len(error) == 1 and "storing stopped" in error[0] and "not stored" in error[0]
    stats = {(r["stage"], r["family"], r["counter"]): r["value"]
             for r in rec.rows("SELECT stage, family, counter, value FROM stats")}
    if stats:  # they fit when the failed batch had grown the log before it was rolled back
        assert rec.rows("SELECT ended FROM runs")[0]["ended"] is not None
    else:
        assert "the run's counters were not stored (disk full" in rest
        stats = _printed_counters(rest)
    families = {f for (stage, f, counter) in stats if stage == "bpf"}
    assert "file" in families
    for fam in families:  # the kernel side detached before the last read: nothing in flight
        assert stats[("bpf", fam, "sent")] - stats[("decode", fam, "received")] == stats[("bpf", fam, "lost")], fam
    delivered = sum(v for (stage, _f, counter), v in stats.items() if (stage, counter) == ("decode", "events"))
    delivered += stats[("detect", "", "delivered")]
    assert stats[("store", "", "failed")] > 0
    assert stats[("store", "", "written")] + stats[("store", "", "failed")] + stats[("queue", "store", "dropped")] \
        == delivered
    tables = [r["name"] for r in rec.rows("SELECT name FROM sqlite_master WHERE type = 'table'") if r["name"] in FAMILIES]
    stored = sum(rec.rows(f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in tables)
    assert stored == stats[("store", "", "written")]


def test_ingest_onto_a_full_disk_names_it_and_keeps_what_was_stored(small_disk: Path) -> None:
    samples = sorted(ATTACKS.rglob("*.evtx"))[:40]
    proc = ktriage("ingest", *map(str, samples), "--db", str(small_disk / "win.db"))
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ktriage: error: ")]
    assert proc.returncode == 5 and len(lines) == 1, proc.stderr
    assert "disk full" in lines[0] and "the files before it are stored" in lines[0]
    assert "Traceback" not in proc.stderr and "ktriage: ingested" in proc.stderr  # the summary still printed
    stored = sqlite3.connect(small_disk / "win.db").execute("SELECT count(*) FROM ingested").fetchone()[0]
    assert 0 < stored < len(samples)
