"""Windows ingest rate against the raw parse rate of the same records, measured in the same run.

    .venv/bin/python bench/windows_ingest.py [--rounds 3] [--otrf-copies 4] [--evtx-copies 2] [--jobs N]

Corpora: *dev*, every .evtx under ../shared/data/windows; *folder*, built at run time in a
temporary directory by windows_corpus.py (never committed): OTRF-style JSON lines in zips
made from the dev records, and copies of the dev EVTX files.

Figures (every ratio against a baseline of the same run; rates are records read per second):

- raw parse, one thread: the `evtx` package iterating records_json() for EVTX; for JSON lines
  in zips, reading each member's lines and orjson.loads of each.
- per core: `Ingester` in this process, the --jobs 1 path (read, decode, map, engine, SQLite),
  over the dev EVTX and over the zips; its records per CPU second / the raw records per CPU
  second (CPU seconds: this process's, less sensitive than wall time to the other work of a
  shared machine; each measurement repeated to at least half a second). Target >= 0.8.
- folder: `ktriage ingest` of the whole folder as a subprocess, --jobs 1 and --jobs N (N =
  the CPUs), rounds interleaved: wall time (the median run) and the speed-up (the median of
  the rounds' ratios), and the CPU seconds of the CLI and its workers.
- start-up: the time `ktriage ingest` of a one-record file takes to open it (an audit hook
  in the CLI's own process sees the open; the interpreter's start, `python -c pass`, is
  added), and the wall time of the whole one-record ingest into a fresh database; medians
  of 5, with Python's bytecode cached (in a temporary prefix: as an installed ktriage runs)
  and with PYTHONDONTWRITEBYTECODE=1 (ktriage's own modules compiled at each start, as in a
  source tree run so). Target <= 0.3 s before the first record.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import evtx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import windows_corpus  # noqa: E402

from ktriage.commands.ingest import Ingester  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "windows"
ONE_RECORD = {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, "@timestamp": "2020-01-01T00:00:00Z",
              "Computer": "H", "Image": "C:\\a.exe", "ProcessId": 5}


def _cpu() -> float:
    return time.process_time()  # this process's CPU time, every thread, to the nanosecond


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


MIN_SECONDS = 0.5  # a measurement repeats its work until it has run this long: a 40 ms parse is noise


def timed(work: Callable[[], int]) -> dict[str, float]:
    """records, wall and CPU seconds of work() (which returns the records it read), repeated
    until MIN_SECONDS of CPU time; records are those of one run."""
    cpu, wall, runs = _cpu(), time.perf_counter(), 0
    while True:
        records = work()
        runs += 1
        if _cpu() - cpu >= MIN_SECONDS:
            break
    return {"records": records, "wall_s": (time.perf_counter() - wall) / runs, "cpu_s": (_cpu() - cpu) / runs}


def raw_evtx(files: list[Path]) -> int:
    n = 0
    for f in files:
        records = evtx.PyEvtxParser(str(f), number_of_threads=1).records_json()
        while True:
            try:
                next(records)
            except StopIteration:
                break
            except RuntimeError:
                continue
            n += 1
    return n


def raw_json_zips(zips: list[Path]) -> int:
    n = 0
    for path in zips:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                with z.open(info) as member:
                    for line in io.BufferedReader(member, 1 << 20):
                        if line.strip():
                            orjson.loads(line)
                            n += 1
    return n


def ingest_in_process(files: list[Path]) -> int:
    with tempfile.TemporaryDirectory(prefix="ktriage-bench-") as tmp:
        results = Ingester(str(Path(tmp) / "win.db"), err=io.StringIO()).run(files)
    return sum(r.events + r.unmapped for r in results)


def per_core(raw: Callable[[], int], ingest: Callable[[], int], rounds: int) -> dict[str, Any]:
    """The raw and the ingest rates, rounds interleaved, medians; ratio by CPU and by wall time."""
    raws, ends = [], []
    for _ in range(rounds):
        raws.append(timed(raw))
        ends.append(timed(ingest))
    out: dict[str, Any] = {"records": ends[-1]["records"], "raw_records": raws[-1]["records"]}
    for clock in ("cpu_s", "wall_s"):
        out[f"raw_per_{clock}"] = statistics.median(r["records"] / r[clock] for r in raws)
        out[f"ingest_per_{clock}"] = statistics.median(e["records"] / e[clock] for e in ends)
        out[f"ratio_{clock[:-2]}"] = out[f"ingest_per_{clock}"] / out[f"raw_per_{clock}"]
    return out


def _has_jobs() -> bool:
    help_text = subprocess.run([sys.executable, "-m", "ktriage", "ingest", "--help"], capture_output=True,
                               text=True).stdout
    return "--jobs" in help_text


def cli_ingest(paths: list[Path], jobs: int | None, tmp: Path) -> dict[str, Any]:
    """`ktriage ingest` of paths into a fresh database: wall and CPU seconds (CLI and workers)."""
    db = tmp / f"cli-{jobs}-{time.monotonic_ns()}.db"
    command = [sys.executable, "-m", "ktriage", "ingest", "--db", str(db), *map(str, paths)]
    if jobs is not None:
        command[4:4] = ["--jobs", str(jobs)]
    cpu, wall = _children_cpu(), time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True)
    elapsed, used = time.perf_counter() - wall, _children_cpu() - cpu
    if out.returncode not in (0, 6):
        raise RuntimeError(f"ktriage ingest failed ({out.returncode}): {out.stderr[-2000:]}")
    summary = out.stderr.strip().splitlines()[-1]
    db.unlink(missing_ok=True)
    return {"jobs": jobs or 1, "wall_s": elapsed, "cpu_s": used, "summary": summary}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]


def folder(path: Path, files: int, records: int, jobs: int, tmp: Path, rounds: int) -> dict[str, Any]:
    """The folder ingested with one job and with jobs through the CLI, rounds interleaved; the
    median run of each, and the median of the rounds' speed-ups."""
    parallel = _has_jobs() and jobs > 1
    ones, manys = [], []
    for _ in range(rounds):
        ones.append(cli_ingest([path], 1 if _has_jobs() else None, tmp))
        if parallel:
            manys.append(cli_ingest([path], jobs, tmp))
    out: dict[str, Any] = {"files": files, "records": records, "jobs_1": _median_run(ones)}
    if parallel:
        out[f"jobs_{jobs}"] = _median_run(manys)
        out["speedup"] = statistics.median(one["wall_s"] / many["wall_s"] for one, many in zip(ones, manys))
    return out


# The CLI run as `python -m ktriage` does, with an audit hook that prints the time of the first
# open() of the input file: what precedes it is the start-up before the first record is read.
_FIRST_OPEN = """
import runpy, sys, time
start, target = time.perf_counter(), sys.argv[-1]
def hook(event, args):
    if event == "open" and str(args[0]) == target and hook.first is None:
        hook.first = time.perf_counter() - start
        print(f"first-open {hook.first}", file=sys.__stdout__, flush=True)
hook.first = None
sys.addaudithook(hook)
sys.argv = ["ktriage", *sys.argv[1:]]
runpy.run_module("ktriage", run_name="__main__")
"""


def _startup_env(bytecode: Path | None) -> dict[str, str]:
    """The environment with Python's bytecode cache in bytecode (as an installed ktriage runs), or
    with PYTHONDONTWRITEBYTECODE=1 (ktriage's own modules, from a source tree without
    __pycache__, compiled at each start; the installed libraries keep their bytecode)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    if bytecode is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = str(bytecode)
    return env


def startup(tmp: Path, runs: int = 5) -> dict[str, float]:
    """Medians of: a bare interpreter's run; the CLI until it opens its input (the start-up before
    the first record, once the interpreter runs); a whole one-record ingest into a fresh database.
    With the bytecode cached (a first run writes it to a temporary prefix), and without."""
    one = tmp / "one.json"
    one.write_text(json.dumps(ONE_RECORD) + "\n")
    out: dict[str, float] = {}
    for label, env in (("", _startup_env(tmp / "pycache")), ("_no_bytecode_cache", _startup_env(None))):
        subprocess.run([sys.executable, "-m", "ktriage", "ingest", "--db", str(tmp / "warm.db"), str(one)], env=env,
                       check=True, capture_output=True)  # writes the bytecode cache, when there is one
        ingest, bare, first = [], [], []
        for i in range(runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)
            bare.append(time.perf_counter() - start)
            opened = subprocess.run([sys.executable, "-c", _FIRST_OPEN, "ingest", "--db",
                                     str(tmp / f"first{label}-{i}.db"), str(one)], check=True, capture_output=True,
                                    text=True, env=env).stdout
            first.append(float(opened.split("first-open ")[1].split()[0]))
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ktriage", "ingest", "--db", str(tmp / f"one{label}-{i}.db"),
                            str(one)], check=True, capture_output=True, env=env)
            ingest.append(time.perf_counter() - start)
        python = statistics.median(bare)
        out.update({f"before_first_record_s{label}": python + statistics.median(first),
                    f"one_record_ingest_s{label}": statistics.median(ingest), f"python_bare_s{label}": python})
    return out


def measure(rounds: int = 3, otrf_copies: int = 4, evtx_copies: int = 2, jobs: int | None = None) -> dict[str, Any]:
    files = sorted(DATA.rglob("*.evtx"))
    jobs = jobs or os.cpu_count() or 1
    result: dict[str, Any] = {"dev_evtx": per_core(lambda: raw_evtx(files), lambda: ingest_in_process(files), rounds)}
    with tempfile.TemporaryDirectory(prefix="ktriage-bench-corpus-") as corpus, \
            tempfile.TemporaryDirectory(prefix="ktriage-bench-") as tmp:
        zips, copies = windows_corpus.build(files, Path(corpus), otrf_copies, evtx_copies)
        result["otrf_zips"] = per_core(lambda: raw_json_zips(zips), lambda: ingest_in_process(zips), rounds)
        records = result["otrf_zips"]["raw_records"] + evtx_copies * result["dev_evtx"]["raw_records"]
        result["folder"] = folder(Path(corpus), len(zips) + len(copies), records, jobs, Path(tmp), rounds)
        result["startup"] = startup(Path(tmp))
    dev = result["dev_evtx"]
    result.update(files=len(files), records=dev["records"], raw_parse_per_s=dev["raw_per_wall_s"],
                  end_to_end_per_s=dev["ingest_per_wall_s"], ratio=dev["ratio_cpu"])
    return result


def _lines(result: dict[str, Any]) -> list[str]:
    dev, otrf, fold, start = result["dev_evtx"], result["otrf_zips"], result["folder"], result["startup"]
    lines = [f"dev EVTX, per core: ingest {dev['ingest_per_cpu_s']:.0f} vs raw evtx {dev['raw_per_cpu_s']:.0f} "
             f"records per CPU s = {dev['ratio_cpu']:.2f} (wall {dev['ratio_wall']:.2f}; target >= 0.8)",
             f"OTRF zips, per core: ingest {otrf['ingest_per_cpu_s']:.0f} vs raw JSON {otrf['raw_per_cpu_s']:.0f} "
             f"records per CPU s = {otrf['ratio_cpu']:.2f} (wall {otrf['ratio_wall']:.2f})"]
    for key in sorted(k for k in fold if k.startswith("jobs_")):
        run = fold[key]
        lines.append(f"folder ({fold['files']} files, {fold['records']} records), --jobs {run['jobs']}: "
                     f"{run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} CPU s")
    if "speedup" in fold:
        lines.append(f"folder speed-up: {fold['speedup']:.2f}")
    for label, how in (("", "bytecode cached"), ("_no_bytecode_cache", "ktriage's bytecode not cached")):
        lines.append(f"start-up ({how}) before the first record {start[f'before_first_record_s{label}']:.3f} s "
                     f"(target <= 0.3 s); a whole one-record ingest {start[f'one_record_ingest_s{label}']:.3f} s; "
                     f"python -c pass {start[f'python_bare_s{label}']:.3f} s")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--otrf-copies", type=int, default=4, help="copies of the dev records as OTRF JSON lines")
    ap.add_argument("--evtx-copies", type=int, default=2, help="copies of the dev EVTX files in the folder")
    ap.add_argument("--jobs", type=int, default=None, help="workers of the multi-core run (default: the CPUs)")
    args = ap.parse_args()
    result = measure(args.rounds, args.otrf_copies, args.evtx_copies, args.jobs)
    print(json.dumps(result))
    for line in _lines(result):
        print(f"windows ingest: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
