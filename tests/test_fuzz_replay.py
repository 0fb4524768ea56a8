"""`ktriage detect --events` reads captures someone else made: seeded mutations of the real replay
fixtures either replay or stop with one located error (file:line and what is wrong), never a
traceback, and a valid capture still gives its detections."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ktriage.detect.rules import builtin_rules
from ktriage.errors import UsageError
from ktriage.sources.replay import jsonl_events, replay, stored_events
from ktriage.store.readonly import open_readonly
from ktriage.store.sqlite import SqliteStore

FIXTURES = Path(__file__).parent / "fixtures" / "replay"
CASES = 2000
ODD_VALUES: list[Any] = [None, "", "x", -1, 0, 1 << 63, 1 << 64, -(1 << 70), 1.5, float("1e308"), True, [], [1],
                         {}, {"a": 1}, "\ud800", "\x00"]


SAME_TYPE = {int: [0, -1, 1, (1 << 63) - 1, (1 << 64) - 1, -(1 << 63)], str: ["", "x" * 5000, "\u202e", "a\nb"],
             float: [0.0, -1.0, 1e300]}


def _mutate_value(rng: random.Random, ev: dict[str, Any]) -> None:
    """A value made odd but of its type (the engine must cope), of another type (refused), or gone."""
    key = rng.choice(sorted(ev))
    choice = rng.random()
    if choice < 0.5 and type(ev[key]) in SAME_TYPE and key != "family":
        ev[key] = rng.choice(SAME_TYPE[type(ev[key])])
    elif choice < 0.7:
        ev[key] = rng.choice(ODD_VALUES)
    elif choice < 0.8:
        del ev[key]
    else:
        ev[rng.choice(["family", "seq", "ts", "zzz"])] = rng.choice(ODD_VALUES + ["detection", "process", "nope"])


def _mutated_line(rng: random.Random, line: str) -> bytes:
    roll = rng.random()
    if roll < 0.7:
        ev = json.loads(line)
        for _ in range(rng.randint(1, 2)):
            _mutate_value(rng, ev)
        return json.dumps(ev).encode("utf-8", "surrogatepass")
    if roll < 0.75:
        depth = rng.choice([10, 500, 5000])
        return ("[" * depth + "]" * depth).encode()
    if roll < 0.8:
        return rng.choice([b"\xff\xfe", b"{\"a\": \"\xc3\"}", b"null", b"[]", b"3", b"\"s\""])
    raw = bytearray(line.encode())
    for _ in range(rng.randint(1, 4)):
        raw[rng.randrange(len(raw))] = rng.randrange(256)
    return bytes(raw)


def _case(rng: random.Random, tmp: Path, n: int) -> Path:
    lines = (FIXTURES / rng.choice(sorted(p.name for p in FIXTURES.glob("*.jsonl")))).read_text().splitlines()
    out = [ln.encode() for ln in lines]
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(out))
        out[i] = _mutated_line(rng, lines[i])
    path = tmp / f"case{n}.jsonl"
    path.write_bytes(b"\n".join(out) + b"\n")
    return path


def test_mutated_captures_replay_or_fail_with_a_located_error(tmp_path: Path) -> None:
    rng, rules = random.Random(1301), builtin_rules("linux")
    outcomes = {"replayed": 0, "refused": 0}
    for n in range(CASES):
        path = _case(rng, tmp_path, n)
        try:
            replay(list(jsonl_events(path)), rules)
            outcomes["replayed"] += 1
        except UsageError as exc:
            assert str(exc).startswith(f"{path}:") and "\n" not in str(exc), str(exc)
            outcomes["refused"] += 1
        path.unlink()
    assert min(outcomes.values()) > CASES // 10, outcomes  # both kinds of outcome were exercised


@pytest.mark.parametrize("value", [{"a": 1}, [1], "12", 1.5, True, 1 << 64])
def test_a_wrong_type_is_refused_by_name(tmp_path: Path, value: Any) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"family": "access", "ts": 1, "seq": 1, "pid": value}) + "\n")
    with pytest.raises(UsageError, match=r"c.jsonl:1: not an event: access.pid must be an integer"):
        list(jsonl_events(path))


def test_a_stored_row_that_cannot_be_ordered_is_refused_by_row(tmp_path: Path) -> None:
    db = tmp_path / "evil.db"
    SqliteStore(db).close()
    con = sqlite3.connect(db)
    con.execute("INSERT INTO process (ts, seq, source, pid) VALUES (1, 1, 's', 'text where a pid was')")
    con.execute("INSERT INTO process (ts, seq, source) VALUES ('yesterday', 2, 's')")
    con.commit()
    con.close()
    with pytest.raises(UsageError, match=r"evil.db: process row 2: not an event: process.ts must be an integer"):
        list(stored_events(open_readonly(str(db))))
