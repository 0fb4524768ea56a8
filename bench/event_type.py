"""The event type: a dict with a declared schema (what ktriage uses) against typed records — a
slots dataclass per family and a NamedTuple per family, both generated from model/families.py —
on real event shapes, each figure a ratio to the dict measured in the same round.

    .venv/bin/python bench/event_type.py [--rounds 5] [--copies 30] [--record]

Events: the sensor's own, the JSON-lines captures of tests/fixtures/replay (641 events of every
kernel family but one), repeated --copies times. Per round, for each type, in turn:

- **build**: decode-like construction, one generated function per event shape writing the event's
  own fields by name (the decoder knows its fields by name): a dict literal, ``Rec(name=value, …)``;
  a record's other columns take their None default.
- **read**: the engine's reads: family, ts, pid and the fields the Linux rules test for that
  family (``ev.get(field)`` as the compiled predicates do; ``attrgetter(field)`` for a record).
- **json**: orjson serialisation as the broker and ``--format jsonl`` do (a dataclass natively, a
  NamedTuple through ``_asdict()``: orjson writes a tuple as a list); the bytes are reported too.
- **store**: rows bound and inserted into SQLite with the store's schema (tables, indexes, the
  unique key) in memory: a dict binds the columns it has (one plan per shape, as
  store/sqlite.py does), a record every column of its family (``attrgetter``; a NamedTuple is the row).

Times are CPU seconds of this process (one thread, the cyclic collector held off), the ratio record / dict per round, the median
of the rounds reported with their range (the noise of this shared VM). --record appends the table
and the raw JSON to RESULTS.md as bench/run does.
"""

from __future__ import annotations

import argparse
import gc
import json
import sqlite3
import statistics
import sys
import time
from collections import defaultdict, namedtuple
from collections.abc import Callable
from dataclasses import make_dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

import orjson

from ktriage.model.families import FAMILIES, columns
from ktriage.store import schema

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "tests" / "fixtures" / "replay"
# the fields the Linux catalog's rules test, by family (detect/rules/linux.yml)
RULE_FIELDS = ("op", "action", "how", "path", "prot", "old_prot", "anon", "target_pid", "target_is_sensor",
               "rights_mask", "origin_class", "exe_deleted", "ld_env", "euid", "new_euid", "result", "image")
KINDS = ("dict", "dataclass", "namedtuple")


def real_events() -> list[dict[str, Any]]:
    """The captures' events, u64 values above SQLite's range as their signed 64 bits (as the store
    keeps them: its refit of such a batch is not what this measures)."""
    out = []
    for path in sorted(FIXTURES.glob("*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v - (1 << 64) if isinstance(v, int) and v >= 1 << 63 else v for k, v in ev.items()} for ev in out]


def record_types() -> dict[str, dict[str, type]]:
    """kind -> family -> the record class with every column of the family (default None)."""
    names = {f: ["family", *(c.name for c in columns(f))] for f in FAMILIES}
    return {
        "dataclass": {f: make_dataclass(f"{f.title()}Event", [(n, Any, None) for n in names[f]], slots=True)
                      for f in FAMILIES},
        "namedtuple": {f: namedtuple(f"{f.title()}Row", names[f], defaults=[None] * len(names[f]))
                       for f in FAMILIES},
    }


def builder(kind: str, keys: tuple[str, ...], cls: type | None) -> Callable[[tuple[Any, ...]], Any]:
    """A function writing one shape's fields by name, as generated code (the decoder's way)."""
    if kind == "dict":
        body = "{" + ", ".join(f"{k!r}: v[{i}]" for i, k in enumerate(keys)) + "}"
    else:
        body = "Rec(" + ", ".join(f"{k}=v[{i}]" for i, k in enumerate(keys)) + ")"
    scope: dict[str, Any] = {"Rec": cls}
    exec(f"def build(v):\n    return {body}\n", scope)  # noqa: S102 - code from declared column names only
    return scope["build"]


def readers(kind: str) -> dict[str, list[Callable[[Any], Any]]]:
    out: dict[str, list[Callable[[Any], Any]]] = {}
    for family in FAMILIES:
        declared = {c.name for c in columns(family)}
        fields = ["family", "ts", "pid", *(f for f in RULE_FIELDS if f in declared)]
        if kind == "dict":
            out[family] = [(lambda ev, f=f: ev.get(f)) for f in fields]  # as detect/predicate.py compiles them
        else:
            out[family] = [attrgetter(f) for f in fields]
    return out


def cpu(fn: Callable[[], Any]) -> float:
    """CPU seconds of fn, the cyclic collector held off (it would fall on whichever kind runs when
    its threshold is crossed: noise, not a cost of the type; none of these objects is cyclic)."""
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        fn()
        return time.process_time() - start
    finally:
        gc.enable()


class Measure:
    """One corpus, built once per kind; each operation timed over all of it."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.types = record_types()
        self.inputs = [(ev["family"], tuple(ev), tuple(ev.values())) for ev in events]
        self.builders: dict[str, dict[tuple[str, tuple[str, ...]], Callable[[tuple[Any, ...]], Any]]] = {}
        for kind in KINDS:
            self.builders[kind] = {(f, keys): builder(kind, keys, self.types.get(kind, {}).get(f))
                                   for f, keys, _ in self.inputs}
        self.built = {kind: self._build(kind) for kind in KINDS}
        self.readers = {kind: readers(kind) for kind in KINDS}
        self.cols = {f: [c for c, _ in cols] for f, cols in schema.event_tables().items()}
        self.row_of = {f: attrgetter(*self.cols[f]) for f in FAMILIES}

    def _build(self, kind: str) -> list[Any]:
        builders = self.builders[kind]
        return [builders[(f, keys)](values) for f, keys, values in self.inputs]

    def build(self, kind: str) -> float:
        return cpu(lambda: self._build(kind))

    def read(self, kind: str) -> float:
        evs, by_family = self.built[kind], self.readers[kind]
        fam = (lambda ev: ev["family"]) if kind == "dict" else attrgetter("family")

        def run() -> None:
            for ev in evs:
                for get in by_family[fam(ev)]:
                    get(ev)
        return cpu(run)

    def json(self, kind: str) -> tuple[float, int]:
        evs, dumps = self.built[kind], orjson.dumps
        if kind == "namedtuple":
            out = []
            seconds = cpu(lambda: out.extend(dumps(ev._asdict()) for ev in evs))
        else:
            out = []
            seconds = cpu(lambda: out.extend(dumps(ev) for ev in evs))
        return seconds, sum(map(len, out)) // len(out)

    def store(self, kind: str) -> float:
        db = sqlite3.connect(":memory:", isolation_level=None)
        for table, cols in schema.event_tables().items():
            db.execute(schema.create_table_sql(table, cols))
            for index in schema.INDEXES.get(table, ()):
                db.execute(schema.index_sql(table, index))
            db.execute(schema.unique_sql(table))
        evs = self.built[kind]
        seconds = cpu(lambda: self._insert(db, kind, evs))
        db.close()
        return seconds

    def _insert(self, db: sqlite3.Connection, kind: str, evs: list[Any]) -> None:
        by_sql: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        if kind == "dict":  # store/sqlite.py: one plan per shape, the columns the event has
            plans: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}
            for ev in evs:
                shape = (ev["family"], tuple(ev))
                plan = plans.get(shape)
                if plan is None:
                    present = set(shape[1])
                    cols = tuple(c for c in self.cols[shape[0]] if c in present)
                    plan = plans[shape] = (schema.insert_sql(shape[0], list(cols)), cols)
                by_sql[plan[0]].append(tuple(map(ev.get, plan[1])))
        elif kind == "namedtuple":  # the record is the row, family first
            sqls = {f: schema.insert_sql(f, self.cols[f]) for f in FAMILIES}
            for ev in evs:
                by_sql[sqls[ev.family]].append(ev[1:])
        else:
            sqls = {f: schema.insert_sql(f, self.cols[f]) for f in FAMILIES}
            for ev in evs:
                by_sql[sqls[ev.family]].append(self.row_of[ev.family](ev))
        db.execute("BEGIN")
        for sql, rows in by_sql.items():
            db.executemany(sql, rows)
        db.execute("COMMIT")


def measure(rounds: int, copies: int) -> dict[str, Any]:
    base = real_events()
    events = []
    for copy in range(copies):  # distinct (source, seq): every copy is a new row for the store's unique key
        events += [dict(ev, source=f"{ev['source']}/{copy}") for ev in base]
    m = Measure(events)
    times: dict[str, dict[str, list[float]]] = {op: {k: [] for k in KINDS} for op in ("build", "read", "json", "store")}
    json_bytes = {}
    for _ in range(rounds):
        for kind in KINDS:  # interleaved: a slow moment of the VM falls on every kind alike
            times["build"][kind].append(m.build(kind))
            times["read"][kind].append(m.read(kind))
            seconds, json_bytes[kind] = m.json(kind)
            times["json"][kind].append(seconds)
            times["store"][kind].append(m.store(kind))
    return summary(times, json_bytes, len(events), len(base))


def summary(times: dict[str, dict[str, list[float]]], json_bytes: dict[str, int], n: int,
            distinct: int) -> dict[str, Any]:
    ops = {}
    for op, by_kind in times.items():
        dict_times = by_kind["dict"]
        ops[op] = {"dict_us_per_event": statistics.median(dict_times) / n * 1e6}
        for kind in KINDS[1:]:
            ratios = [t / d for t, d in zip(by_kind[kind], dict_times)]
            ops[op][kind] = {"us_per_event": statistics.median(by_kind[kind]) / n * 1e6,
                             "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
    total = {kind: [sum(times[op][kind][r] for op in times) for r in range(len(times["build"]["dict"]))]
             for kind in KINDS}
    ops["all four"] = {"dict_us_per_event": statistics.median(total["dict"]) / n * 1e6}
    for kind in KINDS[1:]:
        ratios = [t / d for t, d in zip(total[kind], total["dict"])]
        ops["all four"][kind] = {"us_per_event": statistics.median(total[kind]) / n * 1e6,
                                 "ratio": statistics.median(ratios), "ratio_min": min(ratios),
                                 "ratio_max": max(ratios)}
    return {"events": n, "real_events": distinct, "rounds": len(times["build"]["dict"]), "ops": ops,
            "json_bytes_per_event": json_bytes}


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for op, fig in results["ops"].items():
        out.append((f"event type {op}: dict us/event", f"{fig['dict_us_per_event']:.2f}", "baseline", "-"))
        for kind in KINDS[1:]:
            k = fig[kind]
            out.append((f"event type {op}: {kind} / dict (range over {results['rounds']} rounds)",
                        f"{k['ratio']:.2f} ({k['ratio_min']:.2f}-{k['ratio_max']:.2f})", "-", "-"))
    b = results["json_bytes_per_event"]
    out.append(("event type json bytes/event: dict, dataclass, namedtuple",
                f"{b['dict']}, {b['dataclass']}, {b['namedtuple']}", "-", "-"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--copies", type=int, default=30, help="times the real events are repeated")
    ap.add_argument("--record", action="store_true", help="append the table and raw JSON to bench/RESULTS.md")
    args = ap.parse_args()
    results = measure(args.rounds, args.copies)
    table = rows(results)
    width = max(len(r[0]) for r in table)
    for name, value, _, _ in table:
        print(f"{name:<{width}}  {value}")
    if args.record:
        sys.path.insert(0, str(HERE))
        from run import record  # bench/run.py's format

        record({"event_type": results}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
