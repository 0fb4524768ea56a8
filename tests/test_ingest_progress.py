"""`ktriage ingest` tells a user where it is and what it found: on a terminal a
progress bar on stderr redrawn in place (at most ~10 times a second), off a
terminal nothing but plain lines; at the end, on both, a summary table per file
(events, unmapped, unreadable, detections by severity band) with totals and the
top detections by name, cross-checked here against the database it wrote.

The terminal is a real pseudo-terminal (the CLI as a child process); the data is
the dev set in ../shared/data/windows, read by path."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import sqlite3
import struct
import subprocess
import sys
import termios
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import windows_data

DATA = windows_data()

SMALL = DATA / "EVTX-ATTACK-SAMPLES/Defense Evasion/de_unmanagedpowershell_psinject_sysmon_7_8_10.evtx"  # 84
MULTI = DATA / "EVTX-ATTACK-SAMPLES/AutomatedTestingTools/PanacheSysmon_vs_AtomicRedTeam01.evtx"  # 565, 15 chunks
FRAME = re.compile(r"\r(\[ *(\d+)/(\d+) files\][^\r\n]*?)\x1b\[K")  # one drawing of the bar
CLEAR = "\r\x1b[K"
BANDS = [("sev7+", 7, 99), ("sev5-6", 5, 6), ("sev3-4", 3, 4), ("sev1-2", -99, 2)]  # DESIGN §3's scale
COLUMNS = ["events", "unmapped", "unreadable", "detections", *(name for name, _low, _high in BANDS), "status", "file"]
DEFAULT_ROWS = 50
MIN_INTERVAL_S = 0.1


def cells(text: str) -> int:
    """Terminal columns text takes: wide characters two, combining ones none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


# -- running the CLI on a terminal and on a pipe ---------------------------------------------

def _terminal(*args: str, columns: int = 120, timeout: float = 300) -> tuple[int, str, float]:
    """ktriage with stderr (and stdout) on a new pseudo-terminal of the given width: exit code, output, seconds."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "ktriage", *args], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    try:
        while time.monotonic() - start < timeout:
            if not select.select([master], [], [], 1.0)[0]:
                continue
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: the child closed its end of the terminal
                break
            if not data:
                break
            chunks.append(data)
        returncode = proc.wait(timeout=10)
    finally:
        proc.kill() if proc.poll() is None else None
        os.close(master)
    return returncode, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n"), time.monotonic() - start


def _without_bar(text: str) -> str:
    return FRAME.sub("", text).replace(CLEAR, "")


def _ingest(tmp_path: Path, *args: str) -> tuple[Path, subprocess.CompletedProcess]:
    """ktriage ingest on pipes; stderr decoded as it is (no newline translation, so a carriage return shows)."""
    db = tmp_path / "t.db"
    out = subprocess.run([sys.executable, "-m", "ktriage", "ingest", *args, "--db", str(db)], capture_output=True,
                         timeout=300)
    out.stderr = out.stderr.decode("utf-8", "replace")
    return db, out


# -- reading the summary back ----------------------------------------------------------------

@dataclass
class Row:
    counts: dict[str, int]
    status: str
    file: str


def _table(text: str) -> tuple[str, list[Row]]:
    """The heading line and the rows (total last) of the summary table in text."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ktriage: summary:"))
    assert lines[start + 1].split() == COLUMNS, lines[start + 1]
    rows = []
    for line in lines[start + 2:]:
        if line.startswith("ktriage:") or not line.strip():
            break
        parts = line.split(None, len(COLUMNS) - 1)
        rows.append(Row(dict(zip(COLUMNS, map(int, parts[:-2]))), parts[-2], parts[-1]))
    assert rows and rows[-1].status == "total", "the totals come last"
    return lines[start], rows


def _top(text: str) -> list[tuple[int, int, str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ktriage: top detections"))
    assert lines[start + 1].split() == ["count", "sev", "name"]
    out = []
    for line in lines[start + 2:]:
        parts = line.split()
        if len(parts) != 3 or not parts[0].isdigit():
            break
        out.append((int(parts[0]), int(parts[1]), parts[2]))
    return out


def _band(severity: int) -> str:
    return next(name for name, low, high in BANDS if low <= severity <= high)


def _stored(db: Path) -> dict[str, dict[str, int]]:
    """Per ingested path, the counts the table must show, from the database alone."""
    con = sqlite3.connect(db)
    out = {}
    for path, source, events, unmapped, errors in con.execute(
            "SELECT path, source, events, unmapped, errors FROM ingested"):
        counts = dict.fromkeys(COLUMNS[:-2], 0) | {"events": events, "unmapped": unmapped, "unreadable": errors}
        for severity, n in con.execute("SELECT severity, count(*) FROM detection WHERE source = ? GROUP BY severity",
                                       (f"detect/{source}",)):
            counts[_band(severity)] += n
            counts["detections"] += n
        out[path] = counts
    con.close()
    return out


def _sums(rows: list[Row]) -> dict[str, int]:
    return {c: sum(r.counts[c] for r in rows) for c in COLUMNS[:-2]}


# -- the tests -------------------------------------------------------------------------------

def test_on_a_terminal_the_bar_is_redrawn_in_place_and_every_file_is_in_the_summary(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    returncode, out, seconds = _terminal("ingest", str(DATA), "--db", str(db), "--summary-rows", "0")
    assert returncode == 6 and "Traceback" not in out, out[-3000:]
    frames = FRAME.findall(out)
    stored = _stored(db)
    assert len(frames) >= 2, f"a bar redrawn in place, seen {len(frames)} times in {seconds:.1f} s"
    assert len(frames) <= seconds / MIN_INTERVAL_S + 2, f"{len(frames)} drawings in {seconds:.1f} s"
    done = [int(d) for _text, d, _t in frames]
    assert done == sorted(done) and {int(t) for _x, _d, t in frames} == {len(stored)}
    assert all(re.search(r" \d[\d,]* events [\d,]+/s +[\d,]+ detections \([\d,]+ sev>=5\)", f) for f, _d, _t in
               frames), frames[:3]
    assert all(cells(text) < 120 for text, _d, _t in frames), "a drawing never wraps the line"
    plain = _without_bar(out)
    assert "\x1b" not in plain and "\r" not in plain, "the bar is the only thing drawn in place"
    assert not re.search(r"files\]", plain), "nothing of a bar is left on the lines between drawings"
    heading, rows = _table(plain)
    assert heading.startswith(f"ktriage: summary: {len(stored)} files")
    files = {r.file: r.counts for r in rows[:-1]}
    assert files == stored, "every file, its counts as stored"
    assert rows[-1].counts == _sums(rows[:-1]), "totals are the sums of the rows"
    assert plain.splitlines()[-1].startswith("ktriage: ingested "), "the last line is still the one-line summary"


def test_on_a_pipe_there_is_no_bar_and_the_bounded_summary_adds_up_to_the_database(tmp_path: Path) -> None:
    db, out = _ingest(tmp_path, str(DATA))
    assert out.returncode == 6 and "Traceback" not in out.stderr
    assert "\x1b" not in out.stderr and "\r" not in out.stderr and "files]" not in out.stderr
    stored = _stored(db)
    heading, rows = _table(out.stderr)
    shown, rest, total = rows[:-2], rows[-2], rows[-1]
    omitted = len(stored) - len(shown)
    assert len(shown) == DEFAULT_ROWS and rest.status == "-" and rest.file == f"({omitted} more files)"
    assert f"the other {omitted} are summed in one row" in heading, "never truncated silently"
    assert {r.file: r.counts for r in shown}.items() <= stored.items()
    unshown = [c for path, c in stored.items() if path not in {r.file for r in shown}]
    assert rest.counts == {c: sum(u[c] for u in unshown) for c in COLUMNS[:-2]}, "the omitted files, summed"
    assert total.counts == _sums(rows[:-1]) == {c: sum(s[c] for s in stored.values()) for c in COLUMNS[:-2]}
    rank = lambda c: (c["sev7+"] + c["sev5-6"] + c["unreadable"] > 0, c["sev7+"], c["sev5-6"],  # noqa: E731
                      c["unreadable"], c["detections"])
    assert min(rank(r.counts) for r in shown) >= max(rank(c) for c in unshown), "the most severe are shown"
    con = sqlite3.connect(db)
    by_name = con.execute("SELECT count(*), max(severity), name FROM detection GROUP BY name "
                          "ORDER BY count(*) DESC, name LIMIT 10").fetchall()
    assert _top(out.stderr) == by_name
    assert total.counts["detections"] == con.execute("SELECT count(*) FROM detection").fetchone()[0]
    lines = out.stderr.splitlines()
    assert lines[-1].startswith("ktriage: ingested ") and f"{total.counts['events']} events" in lines[-1]


@pytest.mark.parametrize("columns", [80, 40])
def test_the_bar_fits_the_terminal_and_escapes_a_hostile_name(tmp_path: Path, columns: int) -> None:
    folder = tmp_path / "evidence"
    folder.mkdir()
    name = "a\x1b[2Jb" + "漢字" * 40 + ".evtx"
    shutil.copy(SMALL, folder / name)
    returncode, out, _seconds = _terminal("ingest", str(folder), "--db", str(tmp_path / "t.db"), columns=columns)
    assert returncode == 0, out[-2000:]
    frames = [text for text, _d, _t in FRAME.findall(out)]
    assert frames and all(cells(f) < columns for f in frames), frames
    assert all("\x1b" not in f for f in frames), frames
    if columns >= 80:
        assert any("a\\x1b[2Jb漢" in f for f in frames), frames
    assert "\x1b[2J" not in out


def test_progress_never_on_a_terminal_and_always_on_a_pipe(tmp_path: Path) -> None:
    returncode, out, _seconds = _terminal("ingest", str(SMALL), "--db", str(tmp_path / "a.db"), "--progress", "never")
    assert returncode == 0 and not FRAME.search(out) and "\x1b" not in out
    _table(out)
    _db, piped = _ingest(tmp_path, str(SMALL), "--progress", "always")
    assert piped.returncode == 0 and FRAME.search(piped.stderr), piped.stderr


def test_updates_for_half_a_second_cost_little_and_draw_five_times_or_so() -> None:
    """What a parent merging parallel workers does: a stream of counter updates, here for 0.5 s."""
    from ktriage.render.progress import Progress

    master, slave = pty.openpty()
    terminal = os.fdopen(slave, "w", encoding="utf-8")
    progress = Progress(terminal, enabled=True)
    progress.start(total_files=1_000_000)
    drained: list[bytes] = []
    start = time.monotonic()
    updates = 0
    while time.monotonic() - start < 0.5:
        for _ in range(1000):
            progress.update(events=7, detections=updates % 2, severe=updates % 3 == 0, files_done=updates % 4 == 0,
                            current=f"file-{updates}.evtx")
            updates += 1
        while select.select([master], [], [], 0)[0]:  # keep the terminal's buffer from filling
            drained.append(os.read(master, 1 << 16))
    seconds = time.monotonic() - start
    progress.finish()
    while select.select([master], [], [], 0.2)[0]:
        drained.append(os.read(master, 1 << 16))
    terminal.close()
    os.close(master)
    text = b"".join(drained).decode()
    frames = FRAME.findall(text)
    assert updates >= 100_000, f"{updates} updates in {seconds:.2f} s: more than 5 us each"
    assert seconds / MIN_INTERVAL_S / 2 <= len(frames) <= seconds / MIN_INTERVAL_S + 1, (len(frames), seconds)
    assert text.endswith(CLEAR), "finish leaves the line clean"
    assert (progress.files, progress.events, progress.detections, progress.severe) == (
        (updates + 3) // 4, 7 * updates, updates // 2, (updates + 2) // 3)
    assert [int(d) for _text, d, _t in frames] == sorted(int(d) for _text, d, _t in frames)


def test_off_a_terminal_the_counters_count_and_nothing_is_written(tmp_path: Path) -> None:
    from ktriage.render.progress import Progress

    with open(tmp_path / "err.txt", "w") as err:
        progress = Progress(err, enabled=err.isatty())
        progress.start(total_files=3)
        for _ in range(3):
            progress.update(files_done=1, events=10, detections=2, severe=1, errors=1, current="x.evtx")
        progress.clear()
        progress.finish()
    assert (tmp_path / "err.txt").read_text() == ""
    assert Counter(files=progress.files, events=progress.events, errors=progress.errors) == Counter(
        files=3, events=30, errors=3)


def test_each_file_gets_its_status_skipped_unread_partial_and_ok(tmp_path: Path) -> None:
    folder = tmp_path / "evidence"
    folder.mkdir()
    shutil.copy(SMALL, folder / "a-seen.evtx")
    db, first = _ingest(tmp_path, str(folder / "a-seen.evtx"))
    assert first.returncode == 0
    (folder / "b-broken.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    (folder / "c-cut.evtx").write_bytes(SMALL.read_bytes()[:60000])
    shutil.copy(MULTI, folder / "d-good.evtx")
    _db, out = _ingest(tmp_path, str(folder), "--summary-rows", "0")
    assert out.returncode == 6
    _heading, rows = _table(out.stderr)
    status = {Path(r.file).name: r.status for r in rows[:-1]}
    assert status == {"a-seen.evtx": "skipped", "b-broken.zip": "unread", "c-cut.evtx": "partial",
                      "d-good.evtx": "ok"}
    by_name = {Path(r.file).name: r.counts for r in rows[:-1]}
    assert by_name["a-seen.evtx"]["events"] == 0, "nothing read again"
    assert by_name["b-broken.zip"]["unreadable"] == 1 and by_name["c-cut.evtx"]["unreadable"] > 0
    stored = _stored(db)
    assert by_name["c-cut.evtx"] == stored[str(folder / "c-cut.evtx")]
    assert by_name["d-good.evtx"] == stored[str(folder / "d-good.evtx")]
    assert Path(rows[-2].file).name == "a-seen.evtx", "nothing to look at: last"
    assert rows[-1].counts == _sums(rows[:-1])


def test_the_readme_sample_has_the_columns_and_the_bar_the_tool_prints() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    lines = [line.strip() for line in readme.splitlines()]
    assert " ".join(COLUMNS) in lines, "the sample table's header"
    assert any(FRAME.match("\r" + line + "\x1b[K") for line in lines), "the sample bar"
