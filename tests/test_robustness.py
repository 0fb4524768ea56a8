"""Bad input gets one clear line and a non-zero exit, and nothing stored is lost."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import Recording, generate, ktriage


def _one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ktriage: error: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def recorded_db(root: None, tmp_path_factory: pytest.TempPathFactory):
    """A database holding a short real recording."""
    db = tmp_path_factory.mktemp("db") / "kept.db"
    rec = Recording(db)
    generate("file")
    rec.wait_rows("SELECT 1 FROM file")
    rec.stop()
    return db


def _count(db) -> int:
    con = sqlite3.connect(db)
    try:
        return sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                   for t in ("process", "thread", "image", "file", "network"))
    finally:
        con.close()


def test_missing_directory(root: None, tmp_path) -> None:
    _one_error_line(ktriage("record", "--db", str(tmp_path / "no" / "such" / "x.db"), "--duration", "1"),
                    "does not exist", str(tmp_path / "no" / "such"))


def test_unwritable_directory(root: None, tmp_path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(ro)], check=True)
    try:
        _one_error_line(ktriage("record", "--db", str(ro / "x.db"), "--duration", "1"), "not writable")
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_not_a_database_is_left_untouched(root: None, tmp_path) -> None:
    precious = tmp_path / "notes.db"
    precious.write_text("my notes, not a database\n")
    _one_error_line(ktriage("record", "--db", str(precious), "--duration", "1"), "not a SQLite database")
    assert precious.read_text() == "my notes, not a database\n"


def test_nonexistent_pid(root: None, tmp_path) -> None:
    pid = 4_000_000  # above pid_max's hard ceiling (4194304 is the maximum, never reached in tests)
    while os.path.exists(f"/proc/{pid}"):
        pid += 1
    _one_error_line(ktriage("record", "--db", str(tmp_path / "x.db"), "--pid", str(pid)), f"--pid {pid}",
                    "no such process")


def test_non_root_is_refused_and_database_kept(recorded_db) -> None:
    before = _count(recorded_db)
    # modules are imported before dropping privileges: the interpreter may live under /root
    code = ("import os, sys, locale, gettext, ktriage.commands.record\nfrom ktriage.cli import main\n"
            "os.setgid(65534)\nos.setuid(65534)\n"
            f"sys.exit(main(['record', '--db', {str(recorded_db)!r}, '--duration', '1']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    _one_error_line(proc, "root")
    assert _count(recorded_db) == before


def test_kernel_without_btf_keeps_database(recorded_db, tmp_path) -> None:
    before = _count(recorded_db)
    env = dict(os.environ, KTRIAGE_BTF=str(tmp_path / "no-btf"), KTRIAGE_CACHE=str(tmp_path / "cache"))
    _one_error_line(ktriage("record", "--db", str(recorded_db), "--duration", "1", env=env), "BTF")
    assert _count(recorded_db) == before


def test_missing_clang(root: None, tmp_path) -> None:
    env = dict(os.environ, PATH=str(tmp_path), KTRIAGE_CACHE=str(tmp_path / "cache"))
    _one_error_line(ktriage("record", "--db", str(tmp_path / "x.db"), "--duration", "1", env=env),
                    "clang not found", "install the clang package")


def test_existing_database_is_appended_not_replaced(recorded_db) -> None:
    before = _count(recorded_db)
    rec = Recording(recorded_db)
    facts = generate("thread")
    rec.wait_rows("SELECT 1 FROM thread WHERE new_tid=?", (facts["new_tid"],))
    rec.stop()
    assert _count(recorded_db) > before
    runs = sqlite3.connect(recorded_db).execute("SELECT count(*) FROM runs WHERE ended IS NOT NULL").fetchone()[0]
    assert runs >= 2


def test_kill_9_leaves_every_committed_row(root: None, tmp_path) -> None:
    db = tmp_path / "killed.db"
    rec = Recording(db)
    for _ in range(3):
        generate("file")
    committed = len(rec.wait_rows("SELECT id FROM file", count=18))
    assert committed >= 18
    rec.proc.send_signal(signal.SIGKILL)
    rec.proc.wait(timeout=30)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT count(*) FROM file").fetchone()[0] >= committed
    con.close()
    time.sleep(0.2)
    # the next recording opens the same database and carries on
    rec2 = Recording(db)
    rec2.stop()


def test_query_formats_and_errors(recorded_db) -> None:
    sql = "SELECT op, path FROM file ORDER BY id LIMIT 2"
    table = ktriage("query", "--db", str(recorded_db), sql)
    assert table.returncode == 0 and table.stdout.splitlines()[0].split() == ["op", "path"]
    jsonl = ktriage("query", "--db", str(recorded_db), "--format", "jsonl", sql)
    assert [sorted(__import__("json").loads(line)) for line in jsonl.stdout.splitlines()] == [["op", "path"]] * 2
    csv = ktriage("query", "--db", str(recorded_db), "--format", "csv", sql)
    assert csv.stdout.splitlines()[0] == "op,path" and len(csv.stdout.splitlines()) == 3
    _one_error_line(ktriage("query", "--db", str(recorded_db), "SELEC nonsense"), "query failed")
    _one_error_line(ktriage("query", "--db", str(recorded_db), "DELETE FROM file"), "query failed")
    _one_error_line(ktriage("query", "--db", str(recorded_db.parent / "missing.db"), "SELECT 1"), "no such database")
    assert _count(recorded_db) > 0
