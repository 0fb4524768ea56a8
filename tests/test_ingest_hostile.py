"""Each hole issue 13 found in `ktriage ingest`, as a test on the real CLI and
the real stores: hostile evidence gets a located error, never a traceback,
never a silent loss; what does not fit a column is kept as text; a bad file
does not stop the next; the exit code says whether everything was read.

Only the CLI (a subprocess) and the databases are used here, so the same file
runs against an older ktriage on PYTHONPATH to show each hole it had."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import psycopg
import pytest

from conftest import ktriage

DATA = Path(os.environ.get("KTRIAGE_WINDOWS_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "windows"))
if not DATA.is_dir():
    if os.environ.get("CI"):
        raise RuntimeError(f"the Windows samples are not at {DATA}")
    pytest.skip(f"the Windows samples are not at {DATA}", allow_module_level=True)

SMALL = DATA / "EVTX-ATTACK-SAMPLES/Defense Evasion/de_unmanagedpowershell_psinject_sysmon_7_8_10.evtx"  # 84
MULTI = DATA / "EVTX-ATTACK-SAMPLES/AutomatedTestingTools/PanacheSysmon_vs_AtomicRedTeam01.evtx"  # 565, 15 chunks
INCOMPLETE = 6
SYSMON = "Microsoft-Windows-Sysmon/Operational"


def _ingest(tmp_path: Path, *paths: Path, db: str | None = None) -> subprocess.CompletedProcess:
    return ktriage("ingest", *map(str, paths), "--db", db or str(tmp_path / "t.db"), timeout=300)


def _clean(out: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.splitlines()[-1].startswith("ktriage: ingested "), "the summary always prints"
    return out.stderr


def _line(**fields: object) -> str:
    return json.dumps({"Channel": SYSMON, "EventID": 1, "@timestamp": "2020-01-01T00:00:00Z", "Computer": "H",
                       "Image": "C:\\a.exe", "ProcessId": 5, **fields})


# -- EVTX: truncated, zeroed, not EVTX at all -------------------------------------------------

def test_a_truncated_evtx_reports_what_is_missing_and_keeps_what_is_before_the_cut(tmp_path: Path) -> None:
    data = SMALL.read_bytes()
    cut = tmp_path / "cut.evtx"
    cut.write_bytes(data[:4096 + 30000])  # records 1-36 lie wholly before the cut
    out = _ingest(tmp_path, cut)
    assert out.returncode == INCOMPLETE
    stderr = _clean(out)
    assert f"{cut} chunk 0 (offset 0x1000): 36 of the 84 records it holds (ids 1-84) read" in stderr
    assert "the file ends 30000 bytes into it" in stderr
    con = sqlite3.connect(tmp_path / "t.db")
    assert con.execute("SELECT events + unmapped, errors FROM ingested").fetchone() == (36, 1)


def test_truncations_at_63_offsets_never_report_nothing(tmp_path: Path) -> None:
    data = SMALL.read_bytes()
    folder = tmp_path / "cuts"
    folder.mkdir()
    for i in range(63):
        (folder / f"{i:02d}.evtx").write_bytes(data[:4096 + 1000 * i + 7])
    out = _ingest(tmp_path, folder)
    stderr = _clean(out)
    silent = [line for line in stderr.splitlines() if line.endswith(" 0 unmapped records, 0 unreadable")]
    assert silent == [] and out.returncode == INCOMPLETE


def test_a_zeroed_chunk_is_reported_with_its_offset(tmp_path: Path) -> None:
    data = MULTI.read_bytes()
    zeroed = tmp_path / "zeroed.evtx"
    zeroed.write_bytes(data[:4096] + bytes(65536) + data[4096 + 65536:])  # records 1-44 are in chunk 0
    out = _ingest(tmp_path, zeroed)
    assert out.returncode == INCOMPLETE
    assert f"{zeroed} chunk 0 (offset 0x1000): all zeros, though the file header says it holds records" \
        in _clean(out)


@pytest.mark.parametrize("content", [b"", b"ElfFile\0" + bytes(50), b"X" + b"lfFile\0" + bytes(4088)],
                         ids=["empty", "short", "bad-magic"])
def test_broken_evtx_headers_are_one_error_and_not_marked(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.evtx"
    bad.write_bytes(content)
    out = _ingest(tmp_path, bad)
    assert out.returncode == INCOMPLETE
    assert f"ktriage: {bad}: not ingested: " in _clean(out)
    assert sqlite3.connect(tmp_path / "t.db").execute("SELECT count(*) FROM ingested").fetchone() == (0,)


def test_a_damaged_header_magic_still_yields_the_chunks(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.evtx"
    damaged.write_bytes(b"X" + SMALL.read_bytes()[1:])
    out = _ingest(tmp_path, damaged)
    assert "no EVTX file header (it starts 586c6646696c6500, not ElfFile)" in _clean(out)
    assert sqlite3.connect(tmp_path / "t.db").execute("SELECT events + unmapped FROM ingested").fetchone() == (84,)


@pytest.mark.parametrize("name, content, what", [
    ("report.pdf", b"%PDF-1.7\n1 0 obj\n", "a PDF document"),
    ("notes.txt", b"meeting notes\nnothing here\n", "text, not JSON"),
    ("Security.evtx", b"%PDF-1.4\n" * 100, "a PDF document"),
    ("tool.zip", b"\x7fELF\x02\x01\x01" + bytes(100), "an ELF executable")])
def test_a_file_that_is_no_event_log_is_refused_naming_what_it_is(tmp_path, name: str, content: bytes,
                                                                   what: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    out = _ingest(tmp_path, path)
    assert out.returncode == INCOMPLETE
    assert f"ktriage: {path}: not ingested: not an event log: {what} (EVTX, JSON, zip or tar.gz expected)" \
        in _clean(out).splitlines()


# -- JSON -----------------------------------------------------------------------------------

def test_json_lines_starting_with_spaces_are_lines(tmp_path: Path) -> None:
    path = tmp_path / "indented.jsonl"
    path.write_text("".join(f"  {_line(ProcessId=i)}\n" for i in range(1, 11)))
    out = _ingest(tmp_path, path)
    assert out.returncode == 0, _clean(out)
    assert sqlite3.connect(tmp_path / "t.db").execute("SELECT count(*) FROM process").fetchone() == (10,)


def test_non_objects_deep_nesting_and_wrong_types_are_located_errors(tmp_path: Path) -> None:
    lines = [_line(), "5", '"text"', "null", "[]", '{"a":' * 2000 + "1" + "}" * 2000, "[" * 2000 + "]" * 2000,
             '{"Event": "abc"}', '{"Event": {"System": []}}', '{"winlog": {"event_data": [1, 2]}}',
             '{"Event": {"System": {"TimeCreated": "now"}}}', _line(ProcessId=6)]
    path = tmp_path / "hostile.json"
    path.write_text("\n".join(lines) + "\n")
    out = _ingest(tmp_path, path)
    assert out.returncode == INCOMPLETE
    stderr = _clean(out)
    assert "2 events, 0 detections, 0 unmapped records, 10 unreadable" in stderr
    assert f"{path}:2: a number, not an object (an event)" in stderr
    con = sqlite3.connect(tmp_path / "t.db")
    assert con.execute("SELECT errors FROM ingested").fetchone() == (10,)


def _query(db_target: str, sql: str) -> list[tuple]:
    con = psycopg.connect(db_target) if db_target.startswith("postgresql://") else sqlite3.connect(db_target)
    try:
        return [tuple(r) for r in con.execute(sql).fetchall()]
    finally:
        con.close()


def test_values_that_do_not_fit_are_kept_as_text(tmp_path: Path, db_target: str) -> None:
    lines = [_line(Image={"nested": [1, 2]}, CommandLine=[1, "two"], ProcessId=2 ** 70),
             _line(ProcessId="0x" + "f" * 30, Image="a\\ud800b", ParentProcessId="not a number"),
             _line(ProcessId=10 ** 30, Computer={"name": "H"})]
    path = tmp_path / "values.json"
    path.write_text("\n".join(lines).replace("\\\\ud800", "\\ud800") + "\n")
    out = _ingest(tmp_path, path, db=db_target)
    assert out.returncode == 0, _clean(out)
    rows = _query(db_target, "SELECT image, cmdline, pid, ppid, host, unfit FROM process ORDER BY seq")
    assert rows[0][:3] == ('{"nested":[1,2]}', '[1,"two"]', None)
    assert json.loads(rows[0][5]) == {"pid": str(2 ** 70)}
    assert rows[1][0] == "a\\ud800b" and json.loads(rows[1][5]) == {"pid": "0x" + "f" * 30, "ppid": "not a number"}
    assert json.loads(rows[2][5]) == {"pid": str(10 ** 30)} and rows[2][4] == '{"name":"H"}'


def test_the_stores_keep_unbindable_values_as_text(db_target: str) -> None:
    """The store's own net, for events from any source: both databases, the same rows."""
    from ktriage.store.access import open_store

    base = {"family": "process", "host": "h", "source": "s", "ts": 1}
    store = open_store(db_target)
    store.insert([dict(base, seq=1, image={"a": 1}, pid=2 ** 70), dict(base, seq=2, image="a\ud800b\x00c", pid=7)])
    store.close()
    rows = _query(db_target, "SELECT seq, image, pid, unfit FROM process ORDER BY seq")
    nul = "\\x00" if db_target.startswith("postgresql://") else "\x00"
    assert rows == [(1, '{"a": 1}', None, json.dumps({"pid": str(2 ** 70)})),
                                        (2, f"a\\ud800b{nul}c", 7, None)]


# -- archives -------------------------------------------------------------------------------

def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_evtx_inside_archives_is_read(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "logs.zip", {"C/Windows/System32/winevt/Logs/Sysmon.evtx": SMALL.read_bytes(),
                                           "README.md": b"collected\n"})
    tgz = tmp_path / "logs.tar.gz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(SMALL, "Sysmon.evtx")
    staging = tmp_path / "tmp"
    staging.mkdir()
    out = ktriage("ingest", str(archive), str(tgz), "--db", str(tmp_path / "t.db"),
                  env={**os.environ, "TMPDIR": str(staging)})
    assert out.returncode == 0, _clean(out)
    assert list(staging.iterdir()) == [], "the staged members are gone"
    assert sqlite3.connect(tmp_path / "t.db").execute("SELECT events + unmapped FROM ingested").fetchall() == [
        (84,), (84,)]
    assert "1 archive members skipped (not event logs)" in out.stderr


def test_encrypted_links_devices_and_nested_archives_are_located_errors(tmp_path: Path) -> None:
    zipped = _zip(tmp_path / "enc.zip", {"a.json": _line().encode() + b"\n", "b.json": _line().encode() + b"\n"})
    data = bytearray(zipped.read_bytes())
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    data[local + 6] |= 1  # the first member's "encrypted" flag, in both headers
    data[central + 8] |= 1
    zipped.write_bytes(bytes(data))
    tgz = tmp_path / "links.tar.gz"
    with tarfile.open(tgz, "w:gz") as t:
        for name, kind in (("shadow.json", tarfile.SYMTYPE), ("hard.json", tarfile.LNKTYPE),
                           ("dev.evtx", tarfile.CHRTYPE), ("pipe.json", tarfile.FIFOTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "/etc/shadow"
            t.addfile(info)
        inner = _zip(tmp_path / "inner.zip", {"x.json": b"{}"}).read_bytes()
        info = tarfile.TarInfo("inner.zip")
        info.size = len(inner)
        t.addfile(info, io.BytesIO(inner))
    out = _ingest(tmp_path, zipped, tgz)
    assert out.returncode == INCOMPLETE
    stderr = _clean(out)
    assert f"{zipped}!a.json: encrypted: not read (ingest has no password)" in stderr
    assert f"{tgz}!shadow.json: a symbolic link to /etc/shadow: refused (only regular files are read)" in stderr
    assert f"{tgz}!dev.evtx: a character device: refused" in stderr
    assert f"{tgz}!inner.zip: an archive inside an archive: not opened (unpack it first)" in stderr
    assert not Path("/etc/shadow.json").exists()


def test_corrupt_archives_give_what_they_hold_before_the_damage(tmp_path: Path) -> None:
    good = "".join(_line(ProcessId=i) + "\n" for i in range(1, 201)).encode()
    zipped = _zip(tmp_path / "a.zip", {"a.json": good, "b.json": good}).read_bytes()
    (tmp_path / "cut.zip").write_bytes(zipped[:len(zipped) // 2])
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for name in ("a.json", "b.json"):
            info = tarfile.TarInfo(name)
            info.size = len(good)
            t.addfile(info, io.BytesIO(good))
    (tmp_path / "cut.tar.gz").write_bytes(gzip.compress(raw.getvalue())[:3000])
    out = _ingest(tmp_path, tmp_path / "cut.zip", tmp_path / "cut.tar.gz")
    assert out.returncode == INCOMPLETE
    stderr = _clean(out)
    assert f"ktriage: {tmp_path / 'cut.zip'}: not ingested: not a readable zip archive: " in stderr
    assert f"ktriage: {tmp_path / 'cut.tar.gz'}: " in stderr and "unreadable" in stderr


# the CLI, then its own peak resident size (VmHWM: this process image's high-water mark, not the test's)
_PEAK = ("import sys\nfrom ktriage.cli import main\nrc = main(sys.argv[1:])\n"
         "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')), file=sys.stderr)\nsys.exit(rc)")


def test_a_zip_bomb_keeps_the_ingest_small(tmp_path: Path) -> None:
    line = b'{"EventID": 99, "Channel": "x"}\n'
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z, z.open("bomb.json", "w") as member:
        for _ in range(256):  # 256 MiB of lines from 0.65 MB
            member.write(line * ((1 << 20) // len(line)))
    assert bomb.stat().st_size < 1 << 20
    out = subprocess.run([sys.executable, "-c", _PEAK, "ingest", str(bomb), "--db", str(tmp_path / "t.db")],
                         capture_output=True, text=True, timeout=300)
    peak_mb = int(out.stderr.strip().splitlines()[-1].split()[1]) / 1024
    assert peak_mb < 200, f"peak RSS {peak_mb:.0f} MB"
    assert out.returncode == INCOMPLETE and "decompression bomb" in out.stderr


# -- many files ------------------------------------------------------------------------------

def test_one_bad_file_does_not_stop_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "evidence"
    folder.mkdir()
    (folder / "a-broken.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    (folder / "b-empty.evtx").write_bytes(b"")
    shutil.copy(SMALL, folder / "c-good.evtx")
    (folder / "d-link.evtx").symlink_to(SMALL)
    (folder / ("e-\udcff-name.evtx")).write_bytes(SMALL.read_bytes() + b"\0")  # a name that is not UTF-8
    out = _ingest(tmp_path, folder)
    assert out.returncode == INCOMPLETE
    stderr = _clean(out)
    assert re.search(re.escape(f"ktriage: {folder / 'c-good.evtx'}: 84 events, ") + r"[1-9]\d* detections, "
                     "0 unmapped records, 0 unreadable", stderr), stderr
    assert "a symbolic link: not followed in a directory walk" in stderr
    assert "ktriage: ingested 2 files (0 already ingested, 3 not readable)" in stderr
    paths = {r[0] for r in sqlite3.connect(tmp_path / "t.db").execute("SELECT path FROM ingested")}
    assert paths == {str(folder / "c-good.evtx"), str(folder / "e-\\udcff-name.evtx")}


def test_a_file_read_completely_exits_0_and_a_damaged_one_6(tmp_path: Path) -> None:
    assert _ingest(tmp_path, SMALL).returncode == 0
    assert _ingest(tmp_path, SMALL).returncode == 0, "already ingested is complete"
    damaged = tmp_path / "damaged.evtx"
    damaged.write_bytes(SMALL.read_bytes()[:60000])
    assert _ingest(tmp_path, damaged).returncode == INCOMPLETE


def test_hostile_member_names_cannot_forge_report_lines(tmp_path: Path) -> None:
    name = "x\nktriage: ingested 999 files (0 already ingested, 0 not readable)\x1b[2J.json"
    archive = _zip(tmp_path / "names.zip", {name: b"5\n"})
    stderr = _clean(_ingest(tmp_path, archive))
    assert "ingested 999" not in "".join(line for line in stderr.splitlines() if line.startswith("ktriage: ingested"))
    assert "\x1b" not in stderr and "x\\nktriage: ingested 999 files" in stderr


def test_system_fields_of_the_wrong_type_are_located_errors(tmp_path: Path) -> None:
    lines = [_line(Channel={"x": 1}), _line(EventID=[1]), _line(EventID=True), '{"winlog": {"channel": 5}}',
             json.dumps({"Event": {"System": {"EventID": {"#text": {"deep": 1}}, "Channel": SYSMON}}}),
             _line(**{"@timestamp": {"t": 1}}), _line()]
    path = tmp_path / "system.json"
    path.write_text("\n".join(lines) + "\n")
    out = _ingest(tmp_path, path)
    stderr = _clean(out)
    assert out.returncode == INCOMPLETE and "1 events, 0 detections, 0 unmapped records, 6 unreadable" in stderr
    assert f"{path}:1: malformed record: the record's Channel is an object, not text" in stderr
    assert f"{path}:4: malformed record: winlog Channel is a number, not text" in stderr


def test_a_name_cannot_reorder_or_hide_its_report_line() -> None:
    from ktriage.sources.reading import printable

    assert printable("invoice\u202egpj.evtx") == "invoice\\u202egpj.evtx", "a right-to-left override"
    assert printable("a\u200bb\u2066c\ufeffd") == "a\\u200bb\\u2066c\\ufeffd", "zero-width and isolate marks"
    assert printable("évidence 日本.evtx") == "évidence 日本.evtx", "letters of any script stay as they are"
