"""Detection rules as data: YAML files parsed into typed, immutable rules.

Three kinds:

* ``match``: one event satisfies ``where`` (and not ``unless``).
* ``sequence``: ``steps`` in order, each joined on its ``by`` fields (the same
  actor/target across steps), all within ``window_ms`` of the first; a step's
  ``after_ms`` makes it count only that long after the previous one.
* ``marks``: events set named marks on an (actor, target) pair; the marks
  accumulate in a sliding ``window_ms`` and the strongest satisfied ``level``
  fires (the seed's mark chain, with its window reset *before* a new mark is
  applied).

Common: ``severity`` (1–10), ``reason``, ``technique`` (ATT&CK ids), ``seed``
(the Sleepwalker detection it corresponds to), ``cooldown_ms`` per (actor,
target), ``suppressed_by`` (stronger detections that make this one redundant on
the same pair), ``tests`` (a positive example and a benign near-miss, as events).
Errors name the file and the rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ktriage.detect.index import Gate, gate_of
from ktriage.detect.predicate import Predicate, PredicateError, compile_where

KINDS = ("match", "sequence", "marks")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: rules load at every start


class RuleError(ValueError):
    """A rule file that cannot be loaded; the message names the file and rule."""


@dataclass(frozen=True)
class Step:
    where: Predicate
    by: tuple[str, ...]
    name: str = ""
    after_ms: int = 0  # sequence: at least this long after the previous step (same-millisecond pairs are not order)


@dataclass(frozen=True)
class Level:
    name: str
    severity: int
    reason: str
    all_of: tuple[str, ...]
    any_of: tuple[str, ...] = ()

    def satisfied(self, marks: set[str]) -> bool:
        return all(m in marks for m in self.all_of) and (not self.any_of or any(m in marks for m in self.any_of))


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    severity: int
    reason: str
    technique: tuple[str, ...]
    seed: str
    platform: str
    steps: tuple[Step, ...]  # match: one step; marks: one step per mark
    window_ms: int = 5000
    cooldown_ms: int = 0
    unless: Predicate | None = None
    until: Step | None = None  # sequence: an event that breaks a partial chain of its key
    suppressed_by: tuple[str, ...] = ()
    levels: tuple[Level, ...] = ()
    tests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    doc: str = ""
    origin: str = ""
    gates: tuple[Gate, ...] = ({},)  # per where-clause, the values it pins fields to (detect/index.py)

    def names(self) -> tuple[str, ...]:
        """Every detection name this rule can emit."""
        return tuple(level.name for level in self.levels) if self.kind == "marks" else (self.name,)


def _where(spec: Any, where: str) -> Predicate:
    try:
        return compile_where(spec)
    except PredicateError as exc:
        raise RuleError(f"{where}: {exc}") from exc


def _by(raw: Any, where: str) -> tuple[str, ...]:
    by = tuple(raw) if isinstance(raw, list) else (raw,)
    if not 1 <= len(by) <= 2 or not all(isinstance(f, str) for f in by):
        raise RuleError(f"{where}: 'by' names one or two fields (actor[, target])")
    return by


def _specs(d: dict[str, Any], kind: str) -> list[Any]:
    if kind == "match":
        specs = [d.get("where")]
    elif kind == "sequence":
        specs = [s.get("where") for s in d.get("steps") or []]
    else:
        specs = [m.get("where") for m in (d.get("marks") or {}).values()]
    return specs + ([d["until"].get("where")] if "until" in d else [])


def _steps(d: dict[str, Any], kind: str, where: str) -> tuple[Step, ...]:
    default_by = d.get("by", ["pid", "target_pid"])
    if kind == "match":
        return (Step(_where(d.get("where"), f"{where}.where"), _by(default_by, where)),)
    if kind == "sequence":
        raw = d.get("steps") or []
        if len(raw) < 2:
            raise RuleError(f"{where}: a sequence needs at least two steps")
        return tuple(Step(_where(s.get("where"), f"{where}.steps[{i}]"), _by(s.get("by", default_by), where),
                          s.get("name", f"step{i}"), int(s.get("after_ms", 0))) for i, s in enumerate(raw))
    marks = d.get("marks") or {}
    if not marks:
        raise RuleError(f"{where}: a marks rule needs marks")
    return tuple(Step(_where(m.get("where"), f"{where}.marks.{name}"), _by(m.get("by", default_by), where), name)
                 for name, m in marks.items())


def _levels(d: dict[str, Any], marks: set[str], where: str) -> tuple[Level, ...]:
    levels = []
    for i, lv in enumerate(d.get("levels") or []):
        used = set(lv.get("all", [])) | set(lv.get("any", []))
        if used - marks:
            raise RuleError(f"{where}.levels[{i}]: unknown marks {sorted(used - marks)}")
        levels.append(Level(lv["name"], int(lv["severity"]), lv["reason"], tuple(lv.get("all", [])),
                            tuple(lv.get("any", []))))
    if not levels:
        raise RuleError(f"{where}: a marks rule needs levels")
    return tuple(sorted(levels, key=lambda lv: -lv.severity))


def rule_from_dict(d: dict[str, Any], origin: str) -> Rule:
    where = f"{origin}: rule {d.get('name', '?')}"
    kind = d.get("kind", "match")
    if kind not in KINDS:
        raise RuleError(f"{where}: unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
    try:
        steps = _steps(d, kind, where)
        levels = _levels(d, {s.name for s in steps}, where) if kind == "marks" else ()
        severity = max((lv.severity for lv in levels), default=0) if kind == "marks" else int(d["severity"])
        return Rule(
            name=d["name"], kind=kind, severity=severity, reason=d.get("reason", ""),
            technique=tuple(d.get("technique", [])), seed=d.get("seed", ""), platform=d.get("platform", "linux"),
            steps=steps, window_ms=int(d.get("window_ms", 5000)), cooldown_ms=int(d.get("cooldown_ms", 0)),
            unless=_where(d["unless"], f"{where}.unless") if "unless" in d else None,
            until=Step(_where(d["until"]["where"], f"{where}.until"), _by(d["until"].get("by", ["pid"]), where))
            if "until" in d else None,
            suppressed_by=tuple(d.get("suppressed_by", [])), levels=levels, tests=d.get("tests") or {},
            doc=d.get("doc", ""), origin=origin, gates=tuple(gate_of(spec) for spec in _specs(d, kind)),
        )
    except KeyError as exc:
        raise RuleError(f"{where}: missing {exc.args[0]!r}") from None


def load_file(path: Path | Any) -> list[Rule]:
    try:
        docs = yaml.load(path.read_text(), Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise RuleError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(docs, list):
        raise RuleError(f"{path}: a rule file is a list of rules")
    return [rule_from_dict(d, str(getattr(path, "name", path))) for d in docs]


def builtin_rules(platform: str | None = None) -> list[Rule]:
    """The shipped catalog (detect/rules/*.yml), optionally for one platform."""
    rules: list[Rule] = []
    for entry in sorted(resources.files("ktriage.detect").joinpath("rules").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yml"):
            rules.extend(load_file(entry))
    names = [(r.platform, n) for r in rules for n in r.names()]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RuleError(f"duplicate detection names in the catalog: {sorted(dupes)}")
    return [r for r in rules if platform is None or r.platform in (platform, "any")]
