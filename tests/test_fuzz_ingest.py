"""The ingest fuzz suite: over 2,000 seeded mutations of the real Windows samples
(tests/ingest_mutations.py) through the real ingest path — Ingester.ingest_file
in two worker processes, and the CLI in a subprocess over a directory of them.

Every input must be accounted for (records or located errors, never "0 events,
0 unreadable" for bytes that held records), nothing may raise, and nothing may
be lost silently: fewer records than the seed held needs an error, an EVTX cut
at offset N must still yield every record wholly before N, and every JSON line
is a record or a located error. The unmutated seeds give exactly the rows the
code before the hardening gave (a pinned digest).
"""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ingest_mutations as mutations
from conftest import ktriage
from ktriage.commands.ingest import Ingester
from ktriage.sources.reading import ReadLimits
from ktriage.sources.windows.logs import SUFFIXES, records

if not mutations.DATA.is_dir():
    if os.environ.get("CI"):
        raise RuntimeError(f"the Windows samples are not at {mutations.DATA}")
    pytest.skip(f"the Windows samples are not at {mutations.DATA}", allow_module_level=True)

# small bounds, so the bombs and long lines among the mutations cross them quickly
LIMITS = ReadLimits(line_bytes=2 << 20, document_bytes=8 << 20, member_bytes=16 << 20, archive_bytes=64 << 20,
                    members=200, ratio=50, ratio_floor=2 << 20)
WORKERS = 2
BUDGET_S = 150  # generation and both workers, on a slow 2-core machine
Fuzzed = tuple[list[mutations.Case], dict[str, dict[str, Any]], float]  # cases, outcomes by path, seconds


def _ids(path: Path) -> set[int]:
    return {r[0] for r in records(path, LIMITS) if isinstance(r, tuple)}


def _outcome(ingester: Ingester, case: mutations.Case) -> dict[str, Any]:
    out: dict[str, Any] = {"name": case.name, "path": str(case.path)}
    try:
        r = ingester.ingest_file(case.path)
        if case.must_read:
            out["ids"] = _ids(case.path)
    except BaseException as exc:  # what the suite exists to find: counted with its traceback
        if isinstance(exc, KeyboardInterrupt):
            raise
        out["traceback"] = traceback.format_exc()
        return out
    out.update(records=r.events + r.unmapped, errors=r.error_count, ingested=r.ingested,
               messages=[f"{e.where}: {e.message}" for e in r.errors[:3]])
    return out


def _worker(job: tuple[list[mutations.Case], str]) -> list[dict[str, Any]]:
    cases, db = job
    err = io.StringIO()
    ingester = Ingester(db, err=err, limits=LIMITS)
    try:
        outcomes = [_outcome(ingester, case) for case in cases]
    finally:
        ingester.store.close()
    if "Traceback" in err.getvalue():
        outcomes.append({"name": "report", "traceback": err.getvalue()})
    return outcomes


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    root = tmp_path_factory.mktemp("fuzz")
    start = time.monotonic()
    cases = mutations.all_cases(root / "inputs")
    jobs = [(cases[i::WORKERS], str(root / f"worker{i}.db")) for i in range(WORKERS)]
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        outcomes = [o for part in pool.map(_worker, jobs) for o in part]
    yield cases, {o["path"] if "path" in o else o["name"]: o for o in outcomes}, time.monotonic() - start
    shutil.rmtree(root / "inputs")  # about 0.5 GB: not left for pytest to keep


def _by_case(fuzzed: Fuzzed) -> list[tuple[mutations.Case, dict[str, Any]]]:
    cases, outcomes, _ = fuzzed
    return [(c, outcomes[str(c.path)]) for c in cases]


def _show(bad: list[tuple[mutations.Case, dict[str, Any]]]) -> str:
    return "\n".join(f"{c.name} ({c.path.name}): {o.get('records')} records, {o.get('errors')} errors "
                     f"{o.get('messages')}" for c, o in bad[:10])


def test_over_two_thousand_inputs_in_ci_time(fuzzed: Fuzzed) -> None:
    cases, _, seconds = fuzzed
    kinds = {k: sum(1 for c in cases if c.kind == k) for k in ("evtx", "json", "archive", "other")}
    assert len(cases) >= 2000 and min(kinds.values()) >= 40, kinds
    assert seconds < BUDGET_S, f"{seconds:.0f} s"


def test_no_input_raises(fuzzed: Fuzzed) -> None:
    _, outcomes, _ = fuzzed
    raised = [o for o in outcomes.values() if "traceback" in o]
    assert raised == [], f"{len(raised)} tracebacks; first: {raised[0]['name']}\n{raised[0]['traceback']}"


def test_every_input_is_accounted_for(fuzzed: Fuzzed) -> None:
    """Records or located errors: never "0 events, 0 unreadable" for an input with bytes in it."""
    silent = [(c, o) for c, o in _by_case(fuzzed) if o.get("records", 0) + o.get("errors", 0) == 0]
    assert silent == [], _show(silent)


def test_fewer_records_than_the_seed_held_is_an_error(fuzzed: Fuzzed) -> None:
    lost = [(c, o) for c, o in _by_case(fuzzed) if "records" in o and o["records"] < c.seed_records and not o["errors"]]
    assert lost == [], _show(lost)


def test_a_file_with_nothing_readable_is_an_error_and_not_marked(fuzzed: Fuzzed) -> None:
    wrong = [(c, o) for c, o in _by_case(fuzzed) if "records" in o and o["records"] == 0 and o["errors"]
             and o["ingested"]]
    assert wrong == [], _show(wrong)


def test_a_truncated_evtx_yields_every_record_before_the_cut(fuzzed: Fuzzed) -> None:
    cut = [(c, o) for c, o in _by_case(fuzzed) if c.must_read]
    assert len(cut) > 300
    missing = [(c, o) for c, o in cut if "ids" in o and not c.must_read <= o["ids"]]
    assert missing == [], _show(missing)
    short = [(c, o) for c, o in cut if "ids" in o and len(o["ids"]) < len(c.must_read | o["ids"]) and not o["errors"]]
    assert short == []


def test_every_json_line_is_a_record_or_a_located_error(fuzzed: Fuzzed) -> None:
    lined = [(c, o) for c, o in _by_case(fuzzed) if c.lines]
    assert len(lined) > 300
    unaccounted = [(c, o) for c, o in lined if "records" in o and o["records"] + o["errors"] < c.lines]
    assert unaccounted == [], _show(unaccounted)


def test_files_that_are_not_event_logs_are_refused_by_name(fuzzed: Fuzzed) -> None:
    refused = [(c, o) for c, o in _by_case(fuzzed) if c.refused]
    assert len(refused) >= 30
    wrong = [(c, o) for c, o in refused if o.get("ingested") or o.get("errors") != 1
             or "not an " not in o["messages"][0]]
    assert wrong == [], _show(wrong)


# -- the unmutated seeds: the rows they gave before ------------------------------------------

# per seed file: rows per table and a digest of them, computed with the code before the hardening
# (tests/ingest_mutations.py row_digests): the seeds it read, it read the same as now. Detections are
# left to the rules' tests; the psinject seeds' access digests were recomputed in issue 14 (the UNKNOWN
# frame of their one CallTrace is .NET JIT code, no longer a stack anomaly), and the digests of tables whose
# events now carry their actor's parent (sources/lineage.py), same row counts
REFERENCE = {
    "de_unmanagedpowershell_psinject_sysmon_7_8_10.evtx": {
        "access": "1:0e0708c0f305369f",
        "image": "1:bb43305b4d975f7e",
        "thread": "82:977a2dc9d28b4656"},
    "sysmon_10_11_outlfank_dumpert_and_andrewspecial_memdump.evtx": {
        "access": "8:0f5c47c28e5adb5a",
        "file": "4:1ba9dfa314f2c85c",
        "process": "3:84f9a65355d72d26"},
    "Win_4985_T1186_Process_Doppelganging.evtx": {"file": "2:c25a5225d5fc4e5a"},
    "Powershell_4104_MiniDumpWriteDump_Lsass.evtx": {"api": "1:5f5615143d42ff99"},
    "PanacheSysmon_vs_AtomicRedTeam01.evtx": {
        "access": "1:ca73777b66435ef1",
        "file": "4:45ab4b5653f8f5dc",
        "image": "5:de88be1d467ca0dd",
        "network": "4:ec981bea9074f46c",
        "process": "512:57ce1d1212b37eb6",
        "registry": "33:67884e21c46e9a39"},
    "system.evtx": {"module": "57:58ae5004397c19aa"},
    "sysmon.evtx": {
        "access": "60:dc2846632f01f4a8",
        "file": "34:9c3d73680c1bb736",
        "network": "2:0ad88b9135c80c80",
        "process": "227:07864f3f56bed794",
        "registry": "32:4da188262812068d"},
    "evtxrs.jsonl": {
        "access": "1:d79af2451a7c9d36",
        "file": "1:e4be703b64644824",
        "process": "21:4c61bce4c9b6b84c",
        "registry": "8:05e29f7e2d1081f6",
        "thread": "29:759777e9230a8633"},
    "otrf.json": {
        "access": "1:885265d69b67564d",
        "file": "1:04f8dc74ec564513",
        "process": "21:c0fbca3d72a0b9d8",
        "registry": "8:6a730eda033963b4",
        "thread": "29:8128a7d83bcfa16c"},
    "winlogbeat.json": {
        "access": "1:1d2e2ba0826e63eb",
        "file": "1:7175e243da858392",
        "process": "21:34f17dc36e14263f",
        "registry": "8:7342bf3526a1f5a1",
        "thread": "29:5556b76c1147ef07"},
    "sigma-69ca12af-119d-44ed-b50f-a47af0ebc364.json": {"file": "1:32e8f66ee47e3623"},
    "sigma-d7a63acb-1284-49bc-bfea-7771146c8b1c.json": {"image": "1:610dd5a96b8118ed"},
    "sigma-c9e5f013-4a6f-4d8c-9b0e-f7a4c3d26e95.json": {"image": "1:4ea461af027e7f8b"},
    "json.zip": {
        "access": "1:78459e7ff0a9577b",
        "file": "1:f61f5fbe53a1099a",
        "process": "21:c55b196b70aa7874",
        "registry": "8:736cb360466f9730",
        "thread": "29:82b06ab51790be72"},
    "json.tar.gz": {
        "access": "1:aa6c401ead239d47",
        "file": "1:887f71226f52d42d",
        "process": "21:6b39895754389505",
        "registry": "8:3e870f4116194557",
        "thread": "29:bf7460c6be698471"},
}
# the seeds it lost records of without a word: pretty-printed documents one after another, an array
# of records, EVTX inside archives. Now every table holds at least those rows and more.
BEFORE_LOST = {
    "pretty-documents.json": {},
    "array.json": {},
    "evtx.zip": {},
    "evtx.tar.gz": {},
    "mixed.zip": {
        "access": "1:610a9ffea25b3d94",
        "file": "1:039ea69677d7c462",
        "process": "21:4e5a654173af4efe",
        "registry": "8:fb9be57496f678d9",
        "thread": "29:ece882c6f26c6b59"},
    "mixed.tar.gz": {
        "access": "1:da3e8b45604e2cf6",
        "file": "1:4b2857738109ed7a",
        "process": "21:fbaa6a934ab34c8a",
        "registry": "8:9f26004060d4542d",
        "thread": "29:66eeffe396e25dd3"},
}


def _rows(table_digests: dict[str, str]) -> dict[str, int]:
    return {table: int(digest.split(":")[0]) for table, digest in table_digests.items()}


def test_unmutated_seeds_give_the_rows_they_gave_before(tmp_path: Path) -> None:
    now = {}
    for i, path in enumerate(mutations.seed_inputs(tmp_path / "seeds")):
        db = tmp_path / f"seed{i}.db"
        Ingester(str(db), err=io.StringIO()).run([path])
        now[path.name] = {t: d for t, d in mutations.row_digests(db).items() if t != "detection"}  # the rules'
    assert set(now) == set(REFERENCE) | set(BEFORE_LOST)                                          # own tests
    assert {name: now[name] for name in REFERENCE} == REFERENCE
    for name, before in BEFORE_LOST.items():
        rows, had = _rows(now[name]), _rows(before)
        assert all(rows.get(t, 0) >= n for t, n in had.items()) and sum(rows.values()) > sum(had.values()), name


# -- the CLI over a directory of mutations ----------------------------------------------------

def test_cli_reads_a_whole_directory_past_bad_files(fuzzed: Fuzzed, tmp_path: Path) -> None:
    cases, _, _ = fuzzed
    picked = cases[::max(1, len(cases) // 60)]
    folder = tmp_path / "evidence"
    folder.mkdir()
    for i, case in enumerate(picked):
        shutil.copy(case.path, folder / f"{i:03d}-{case.kind}{''.join(case.path.suffixes)}")
    out = ktriage("ingest", str(folder), "--db", str(tmp_path / "cli.db"), timeout=300)
    assert out.returncode == 6, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("ktriage: ingested ")
    lines = [line for line in out.stderr.splitlines() if line.startswith(f"ktriage: {folder}")]
    assert "not ingested" in lines[0], "the first file (empty) is bad: the rest are still read"
    walked = {str(p) for p in folder.iterdir() if p.name.endswith(SUFFIXES)}
    assert {line.split(": ")[1] for line in lines} == walked, "every log file has its own report line"
