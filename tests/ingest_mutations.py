"""Seeded, deterministic mutations of the real Windows samples for the ingest fuzz suite.

Seeds: EVTX files from ../shared/data/windows (single- and multi-chunk, one
already damaged), JSON made from their records with the raw ``evtx`` package
(evtx-rs lines and pretty documents, OTRF, Winlogbeat — not through ktriage,
so the oracle does not share the code under test), the sigma JSON documents,
and zip/tar.gz archives of them. Each mutation is written to a directory and
described by a :class:`Case`: what the seed held, and what the oracle may
demand of it (records that must be read, lines that must be accounted for).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import sqlite3
import struct
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import evtx

DATA = Path(os.environ.get("KTRIAGE_WINDOWS_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "windows"))
EVTX_SEEDS = ["EVTX-ATTACK-SAMPLES/Defense Evasion/de_unmanagedpowershell_psinject_sysmon_7_8_10.evtx",
              "EVTX-ATTACK-SAMPLES/Credential Access/sysmon_10_11_outlfank_dumpert_and_andrewspecial_memdump.evtx",
              "EVTX-ATTACK-SAMPLES/Defense Evasion/Win_4985_T1186_Process_Doppelganging.evtx",
              "EVTX-ATTACK-SAMPLES/Credential Access/Powershell_4104_MiniDumpWriteDump_Lsass.evtx",
              "EVTX-ATTACK-SAMPLES/AutomatedTestingTools/PanacheSysmon_vs_AtomicRedTeam01.evtx",
              "evtx-rs/samples/system.evtx",
              "evtx-rs/samples/sysmon.evtx"]
HEADER, CHUNK = 4096, 65536
FIXED_TIME = (2020, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    kind: str  # evtx | json | archive | other
    seed_records: int = 0  # records the unmutated seed yields: fewer read needs an error
    must_read: frozenset[int] = field(default_factory=frozenset)  # EVTX ids wholly before a cut
    lines: int = 0  # non-blank lines, each a record or a located error
    refused: bool = False  # not an event log: one error, not ingested


# -- facts about seeds, from the raw parser ---------------------------------------------

def evtx_ids(path: Path | io.BytesIO) -> list[int]:
    out, it = [], evtx.PyEvtxParser(path if isinstance(path, io.BytesIO) else str(path)).records_json()
    while True:
        try:
            out.append(next(it)["event_record_id"])
        except StopIteration:
            return out
        except RuntimeError:
            continue


def evtx_documents(path: Path, limit: int) -> list[dict]:
    docs, it = [], evtx.PyEvtxParser(str(path)).records_json()
    while len(docs) < limit:
        try:
            docs.append(json.loads(next(it)["data"]))
        except StopIteration:
            break
        except RuntimeError:
            continue
    return docs


def record_spans(data: bytes) -> list[tuple[int, int, int]]:
    """(record id, start, end) of every record the chunk headers lay out, by offset."""
    spans = []
    for chunk in range(HEADER, len(data) - 511, CHUNK):
        if data[chunk:chunk + 8] != b"ElfChnk\0":
            continue
        free = struct.unpack_from("<I", data, chunk + 48)[0]
        off = chunk + 512
        while off + 24 <= min(chunk + free, len(data)) and data[off:off + 4] == b"\x2a\x2a\0\0":
            size, rid = struct.unpack_from("<IQ", data, off + 4)
            if size < 28:
                break
            spans.append((rid, off, off + size))
            off += size
    return spans


# -- writing cases ------------------------------------------------------------------------

class Writer:
    """Writes each distinct input once (the same bytes twice would be "already ingested")."""

    def __init__(self, root: Path) -> None:
        self.root, self.seen, self.cases = root, set(), []
        root.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, data: bytes, suffix: str, kind: str, **facts: object) -> None:
        digest = hashlib.sha256(suffix.encode() + b"\0" + data).hexdigest()
        if digest in self.seen:
            return
        self.seen.add(digest)
        path = self.root / f"{len(self.cases):05d}{suffix}"
        path.write_bytes(data)
        self.cases.append(Case(name, path, kind, **facts))


def _flip(rng: random.Random, data: bytes, n: int, lo: int = 0, hi: int | None = None) -> bytes:
    out = bytearray(data)
    hi = len(out) if hi is None else min(hi, len(out))
    for _ in range(n):
        if hi > lo:
            out[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
    return bytes(out)


def _zero(data: bytes, start: int, length: int) -> bytes:
    return data[:start] + bytes(len(data[start:start + length])) + data[start + length:]


def _put(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    if offset + struct.calcsize(fmt) <= len(out):
        struct.pack_into(fmt, out, offset, value)
    return bytes(out)


# -- EVTX ----------------------------------------------------------------------------------

def _cuts(rng: random.Random, data: bytes, spans: list[tuple[int, int, int]], n: int) -> list[int]:
    chunks = range(HEADER, len(data), CHUNK)
    fixed = [0, 1, 7, 8, 100, 127, 128, 4095, 4096, 4097, 4096 + 7, 4096 + 511, 4096 + 512, 4096 + 600]
    fixed += [c + d for c in chunks for d in (-1, 0, 1, 300) if 0 < c + d < len(data)]
    ends = [e + d for _, _, e in rng.sample(spans, min(len(spans), 8)) for d in (0, 1, -1)]
    return sorted(set(fixed + ends + [rng.randrange(1, len(data)) for _ in range(n)]))


def _evtx_truncations(w: Writer, rng: random.Random, name: str, data: bytes, ids: list[int]) -> None:
    spans, readable = record_spans(data), set(ids)
    for cut in _cuts(rng, data, spans, 24):
        before = frozenset(rid for rid, _, end in spans if end <= cut and rid in readable)
        w.add(f"evtx/truncate/{name}/{cut}", data[:cut], ".evtx", "evtx", seed_records=len(before),
              must_read=before)


def _evtx_damage(rng: random.Random, data: bytes) -> Iterator[tuple[str, bytes]]:
    chunks = list(range(HEADER, len(data), CHUNK))
    for n in (1, 2, 8, 64):
        for _ in range(5):
            yield f"flip{n}", _flip(rng, data, n)
    for _ in range(6):
        yield "flip-header", _flip(rng, data, rng.randrange(1, 6), 0, 128)
        c = rng.choice(chunks)
        yield "flip-chunk-header", _flip(rng, data, rng.randrange(1, 6), c, c + 512)
        yield "zero-range", _zero(data, rng.randrange(len(data)), rng.choice((16, 512, 4096, 30000)))
    for c in chunks[:6]:
        yield "zero-chunk", _zero(data, c, CHUNK)
        yield "bad-chunk-magic", data[:c] + b"XlfChnk\0" + data[c + 8:]
        yield "chunk-ids", _put(_put(data, c + 24, "<Q", rng.randrange(1 << 40)), c + 32, "<Q", rng.randrange(1 << 40))
        yield "chunk-free-offset", _put(data, c + 48, "<I", rng.choice((0, 1, 511, 65537, 0xFFFFFFFF)))
        yield "chunk-last-record", _put(data, c + 44, "<I", rng.choice((0, 600, 0xFFFFFFFF)))
    yield "zero-header", _zero(data, 0, HEADER)
    yield "bad-header-magic", b"X" + data[1:]
    for value in (0, 1, 0xFFFF):
        yield "chunk-count", _put(data, 42, "<H", value)
    for value in (0, 1, (1 << 64) - 1):
        yield "next-record", _put(data, 24, "<Q", value)
    yield "appended-garbage", data + bytes(rng.randrange(256) for _ in range(777))
    yield "appended-chunk", data + data[HEADER:HEADER + CHUNK]
    if len(chunks) > 1:
        yield "swapped-chunks", data[:HEADER] + data[HEADER + CHUNK:HEADER + 2 * CHUNK] + data[HEADER:HEADER + CHUNK] \
            + data[HEADER + 2 * CHUNK:]
    yield "random-bytes", bytes(rng.randrange(256) for _ in range(len(data) // 16))


def evtx_cases(w: Writer) -> None:
    for relative in EVTX_SEEDS:
        path = DATA / relative
        data, ids, name = path.read_bytes(), evtx_ids(path), path.name
        rng = random.Random(f"evtx:{relative}")
        _evtx_truncations(w, rng, name, data, ids)
        for what, mutated in _evtx_damage(rng, data):
            w.add(f"evtx/{what}/{name}", mutated, ".evtx", "evtx", seed_records=len(ids))


# -- JSON ------------------------------------------------------------------------------------

def _flat(doc: dict) -> dict:
    event = doc["Event"]
    system, data = event["System"], event.get("EventData") or {}
    out = {k: v for k, v in data.items() if not isinstance(v, dict)} if isinstance(data, dict) else {}
    event_id = system["EventID"]["#text"] if isinstance(system["EventID"], dict) else system["EventID"]
    out.update(EventID=event_id, Channel=system.get("Channel"), Computer=system.get("Computer"),
               **{"@timestamp": system["TimeCreated"]["#attributes"]["SystemTime"]})
    return out


def _winlogbeat(doc: dict) -> dict:
    flat = _flat(doc)
    meta = {k: flat.pop(k) for k in ("EventID", "Channel", "Computer", "@timestamp")}
    return {"@timestamp": meta["@timestamp"], "winlog": {"event_id": meta["EventID"], "channel": meta["Channel"],
                                                          "computer_name": meta["Computer"], "event_data": flat}}


def json_seeds() -> dict[str, tuple[bytes, int, bool]]:
    """name -> (bytes, records, one record per line)."""
    docs = evtx_documents(DATA / EVTX_SEEDS[0], 30) + evtx_documents(DATA / EVTX_SEEDS[4], 30)
    lines = {"evtxrs.jsonl": [json.dumps(d) for d in docs], "otrf.json": [json.dumps(_flat(d)) for d in docs],
             "winlogbeat.json": [json.dumps(_winlogbeat(d)) for d in docs]}
    seeds = {name: (("\n".join(ls) + "\n").encode(), len(ls), True) for name, ls in lines.items()}
    seeds["pretty-documents.json"] = ("\n".join(json.dumps(d, indent=2) for d in docs[:20]).encode() + b"\n", 20, False)
    seeds["array.json"] = (json.dumps(docs[:10], indent=1).encode(), 10, False)
    for path in sorted(DATA.rglob("*.json"))[:3]:
        seeds[f"sigma-{path.name}"] = (path.read_bytes(), 1, False)
    return seeds


def _deep(depth: int, kind: str) -> str:
    return ('{"a":' * depth + "1" + "}" * depth) if kind == "object" else ("[" * depth + "]" * depth)


_WRONG_TYPES = [('"abc"',), ("5",), ("[]",), ("null",)]
_VALUES = ['{"x": {"y": [1, 2]}}', "[1, 2, 3]", str(2 ** 70), str(-2 ** 70), '"' + "9" * 30 + '"', '"\\ud800"',
           '"a\\udfffb"', '"\\u0000"', "NaN", "Infinity", "1e400", "true", '"0x' + "f" * 40 + '"', '""', "1.5",
           "9" * 5000]
_FIELDS = ["Image", "ProcessId", "SourceProcessId", "TargetImage", "GrantedAccess", "CallTrace", "CommandLine",
           "StartAddress", "Signed", "Computer", "EventID", "@timestamp"]


def _set_field(line: str, name: str, value: str) -> str:
    """line (one JSON object) with field name (at any depth, first occurrence) set to value's JSON text."""
    key = f'"{name}":'
    at = line.find(key)
    if at < 0:
        return line[:-1] + f', "{name}": {value}}}'
    start = at + len(key)
    decoder = json.JSONDecoder()
    while line[start] == " ":
        start += 1
    _, end = decoder.raw_decode(line, start)
    return line[:start] + value + line[end:]


def _structural(rng: random.Random, lines: list[str]) -> Iterator[tuple[str, list[str]]]:
    n = len(lines)
    yield "leading-spaces", ["  " + line for line in lines]
    yield "some-leading-spaces", [(" " * rng.randrange(4)) + line for line in lines]
    yield "crlf", [line + "\r" for line in lines]
    yield "blank-lines", [x for line in lines for x in (line, "", "   ")]
    yield "bom", ["\ufeff" + lines[0]] + lines[1:]
    yield "shuffled", rng.sample(lines, n)
    yield "duplicated", lines + lines[: n // 3]
    for _ in range(3):
        i = rng.randrange(n)
        yield "deleted", lines[:i] + lines[i + 1:]
    for value in ("5", '"x"', "null", "true", "[]", f"[{lines[0]}, 3]", "{}"):
        i = rng.randrange(n)
        yield f"non-object:{value[:8]}", lines[:i] + [value] + lines[i + 1:]
    for depth in (63, 65, 100, 1000, 1025, 2000, 20000):
        for kind in ("object", "list"):
            i = rng.randrange(n)
            yield f"nested-{kind}-{depth}", lines[:i] + [_deep(depth, kind)] + lines[i + 1:]


def _typed(rng: random.Random, lines: list[str]) -> Iterator[tuple[str, list[str]]]:
    for field_name in ("Event", "System", "TimeCreated", "Execution", "EventData", "UserData", "winlog",
                       "event_data", "process", "#attributes"):
        for (value,) in _WRONG_TYPES:
            i = rng.randrange(len(lines))
            yield f"type:{field_name}={value}", lines[:i] + [_set_field(lines[i], field_name, value)] + lines[i + 1:]
    for field_name in _FIELDS:
        for value in rng.sample(_VALUES, 5):
            i = rng.randrange(len(lines))
            changed = _set_field(lines[i], field_name, value)
            yield f"value:{field_name}={value[:12]}", lines[:i] + [changed] + lines[i + 1:]


def _bytes_damage(rng: random.Random, data: bytes) -> Iterator[tuple[str, bytes]]:
    for _ in range(8):
        yield "truncate", data[:rng.randrange(len(data))]
    for n in (1, 3, 20):
        for _ in range(4):
            yield f"flip{n}", _flip(rng, data, n)
    for _ in range(3):
        at = rng.randrange(len(data))
        yield "invalid-utf8", data[:at] + b"\xff\xfe\xc3" + data[at:]
        yield "zero-range", _zero(data, at, rng.randrange(1, 200))
        yield "newline-inserted", data[:at] + b"\n" + data[at:]


def json_cases(w: Writer) -> None:
    for name, (data, count, per_line) in json_seeds().items():
        rng = random.Random(f"json:{name}")
        suffix = ".jsonl" if name.endswith(".jsonl") else ".json"
        w.add(f"json/seed/{name}", data, suffix, "json", seed_records=count, lines=count if per_line else 0)
        if per_line:
            lines = data.decode().splitlines()
            for what, mutated in [*_structural(rng, lines), *_typed(rng, lines)]:
                text = "\n".join(mutated) + "\n"
                w.add(f"json/{what}/{name}", text.encode("utf-8", "surrogatepass"), suffix, "json",
                      lines=sum(1 for x in mutated if x.strip()))
        for what, mutated in _bytes_damage(rng, data):
            w.add(f"json/{what}/{name}", mutated, suffix, "json", seed_records=count)
    w.add("json/empty", b"", ".json", "json")
    w.add("json/blank", b"\n  \n\t\n", ".jsonl", "json")
    w.add("json/long-line", b'{"a": "' + b"x" * (3 << 20) + b'"}\n{"b": 1}\n', ".jsonl", "json", lines=2)


# -- archives ------------------------------------------------------------------------------

def _zip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as z:
        for name, data in members:
            z.writestr(zipfile.ZipInfo(name, FIXED_TIME), data, method)
    return out.getvalue()


def _tar_info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname, info.mtime = size, kind, link, 0
    return info


def _tgz(members: list[tuple[tarfile.TarInfo, bytes]], compress: bool = True) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return gzip.compress(raw.getvalue(), mtime=0) if compress else raw.getvalue()


def _regular(members: list[tuple[str, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
    return [(_tar_info(name, len(data)), data) for name, data in members]


def _set_zip_flag(data: bytes, bit: int = 0x1) -> bytes:
    out = bytearray(data)
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = out.find(sig)
        while pos >= 0:
            struct.pack_into("<H", out, pos + at, struct.unpack_from("<H", out, pos + at)[0] | bit)
            pos = out.find(sig, pos + 4)
    return bytes(out)


def _set_zip_method(data: bytes, method: int) -> bytes:
    out = bytearray(data)
    for sig, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        pos = out.find(sig)
        while pos >= 0:
            struct.pack_into("<H", out, pos + at, method)
            pos = out.find(sig, pos + 4)
    return bytes(out)


def archive_seeds() -> dict[str, tuple[list[tuple[str, bytes]], int]]:
    seeds = json_seeds()
    otrf, beat = seeds["otrf.json"], seeds["winlogbeat.json"]
    small = DATA / EVTX_SEEDS[1]
    evtx_bytes, evtx_count = small.read_bytes(), len(evtx_ids(small))
    return {"json": ([("dataset/otrf.json", otrf[0])], otrf[1]),
            "evtx": ([("logs/Sysmon.evtx", evtx_bytes)], evtx_count),
            "mixed": ([("README.md", b"# dataset\n"), ("a/beat.json", beat[0]), ("b/x.evtx", evtx_bytes)],
                      beat[1] + evtx_count)}


def _crafted(members: list[tuple[str, bytes]], evtx_bytes: bytes) -> Iterator[tuple[str, bytes, str]]:
    line = b'{"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Image": "C:\\\\x.exe"}\n'
    yield "encrypted", _set_zip_flag(_zip(members)), ".zip"
    yield "method-99", _set_zip_method(_zip(members), 99), ".zip"
    yield "stored", _zip(members, zipfile.ZIP_STORED), ".zip"
    yield "empty-zip", _zip([]), ".zip"
    yield "only-readme", _zip([("README.md", b"hello")]), ".zip"
    yield "nested-zip", _zip([("inner.zip", _zip(members))]), ".zip"
    yield "tar-in-zip", _zip([("inner.tar.gz", _tgz(_regular(members)))]), ".zip"
    yield "zip-in-tar", _tgz(_regular([("inner.zip", _zip(members))])), ".tar.gz"
    yield "traversal-names", _zip([("../../../etc/evil.json", line), ("/abs/x.json", line)]), ".zip"
    yield "hostile-names", _zip([("a\nktriage: ingested 999 files\x1b[31m.json", line)]), ".zip"
    yield "many-members", _zip([(f"m{i}.json", line) for i in range(260)]), ".zip"
    yield "bomb-json", _zip([("bomb.json", line * (300_000))]), ".zip"
    yield "bomb-zeros", _zip([("bomb.json", bytes(40 << 20))]), ".zip"
    yield "pdf-as-json", _zip([("x.json", b"%PDF-1.4\n%\xe2\xe3\n")]), ".zip"
    yield "pdf-as-evtx", _zip([("x.evtx", b"%PDF-1.4\n" * 600)]), ".zip"
    yield "truncated-evtx-member", _zip([("x.evtx", evtx_bytes[:40000])]), ".zip"
    for kind, what in ((tarfile.SYMTYPE, "symlink"), (tarfile.LNKTYPE, "hardlink"), (tarfile.CHRTYPE, "chrdev"),
                       (tarfile.BLKTYPE, "blkdev"), (tarfile.FIFOTYPE, "fifo")):
        yield f"tar-{what}", _tgz([(_tar_info("evil.json", 0, kind, "/etc/shadow"), b""),
                                    (_tar_info("ok.json", len(line)), line)]), ".tar.gz"
    yield "tar-dirs-only", _tgz([(_tar_info("d", 0, tarfile.DIRTYPE), b"")]), ".tar.gz"
    yield "tar-plain", _tgz(_regular(members), compress=False), ".tar.gz"
    yield "gzip-not-tar", gzip.compress(line * 50, mtime=0), ".tar.gz"
    plain = _tgz(_regular(members + [("zz.json", line)]), compress=False)
    damaged_header = bytearray(plain)
    second = plain.find(b"zz.json")
    damaged_header[second:second + 100] = bytes(100)
    damaged_header[second + 148:second + 156] = b"garbage!"
    yield "tar-damaged-header", gzip.compress(bytes(damaged_header), mtime=0), ".tgz"
    yield "tar-bomb", _tgz(_regular([("bomb.json", line * 300_000)])), ".tar.gz"
    yield "tar-trailing-garbage", gzip.compress(plain + b"\x01" * 5000, mtime=0), ".tar.gz"


def archive_cases(w: Writer) -> None:
    small_evtx = (DATA / EVTX_SEEDS[1]).read_bytes()
    for name, (members, count) in archive_seeds().items():
        rng = random.Random(f"archive:{name}")
        for suffix, data in ((".zip", _zip(members)), (".tar.gz", _tgz(_regular(members)))):
            w.add(f"archive/seed/{name}{suffix}", data, suffix, "archive", seed_records=count)
            for _ in range(14):
                w.add(f"archive/truncate/{name}{suffix}", data[:rng.randrange(len(data))], suffix, "archive",
                      seed_records=count)
            for n in (1, 2, 8, 40):
                for _ in range(8):
                    w.add(f"archive/flip{n}/{name}{suffix}", _flip(rng, data, n), suffix, "archive",
                          seed_records=count)
            for _ in range(8):
                at = rng.randrange(len(data))
                w.add(f"archive/zero-range/{name}{suffix}", _zero(data, at, rng.randrange(1, 3000)), suffix,
                      "archive", seed_records=count)
        for what, data, suffix in _crafted(members, small_evtx):
            w.add(f"archive/{what}/{name}", data, suffix, "archive")


# -- not event logs -------------------------------------------------------------------------

_OTHERS = {"pdf": b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" * 40, "text": b"just some notes\n" * 90,
           "elf": b"\x7fELF\x02\x01\x01" + bytes(600), "zeros": bytes(70000), "random": None, "empty": b"",
           "sqlite": b"SQLite format 3\0" + bytes(4000), "html": b"<html><body>hi</body></html>\n" * 30}


def other_cases(w: Writer) -> None:
    rng = random.Random("other")
    for what, data in _OTHERS.items():
        for suffix in (".evtx", ".zip", ".tar.gz", ".txt", ".pdf"):
            body = bytes(rng.randrange(256) for _ in range(3000)) if data is None else data
            w.add(f"other/{what}{suffix}", body, suffix, "other", refused=True)
        w.add(f"other/{what}.json", data if data is not None else b"\x00\xff" * 500, ".json", "other")


# -- the unmutated seeds, for the reference ----------------------------------------------------

def seed_inputs(root: Path) -> list[Path]:
    """The unmutated seeds as files: the EVTX seeds, the JSON made from them, their archives."""
    root.mkdir(parents=True, exist_ok=True)
    paths = [DATA / s for s in EVTX_SEEDS]
    for name, (data, _, _) in json_seeds().items():
        (root / name).write_bytes(data)
        paths.append(root / name)
    for name, (members, _) in archive_seeds().items():
        (root / f"{name}.zip").write_bytes(_zip(members))
        (root / f"{name}.tar.gz").write_bytes(_tgz(_regular(members)))
        paths += [root / f"{name}.zip", root / f"{name}.tar.gz"]
    return paths


def row_digests(db: Path) -> dict[str, str]:
    """Per event table: row count and a digest of its rows (without id, NULLs and unfit)."""
    con = sqlite3.connect(db)
    out = {}
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
        if table in ("meta", "runs", "stats", "ingested"):
            continue
        cur = con.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cur.description]
        rows = sorted(json.dumps({k: v for k, v in zip(names, row) if v is not None and k not in ("id", "unfit")},
                                 sort_keys=True) for row in cur)
        if rows:
            out[table] = f"{len(rows)}:{hashlib.sha256(chr(10).join(rows).encode()).hexdigest()[:16]}"
    con.close()
    return out


GENERATORS: list[Callable[[Writer], None]] = [evtx_cases, json_cases, archive_cases, other_cases]


def all_cases(root: Path) -> list[Case]:
    w = Writer(root)
    for generate in GENERATORS:
        generate(w)
    return w.cases
