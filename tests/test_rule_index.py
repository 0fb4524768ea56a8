"""The rule index only skips rules that cannot hold: every rule with a clause
true for an event is among the rules the index gives for it."""

from __future__ import annotations

import pytest

from ktriage.detect.index import RuleIndex, gate_of
from ktriage.detect.rules import builtin_rules

RULES = builtin_rules()


def _examples() -> list[dict]:
    out = [dict(ev) for r in RULES for kind in ("positive", "benign") for ev in r.tests.get(kind, [])]
    # variations the examples do not cover: unknown family, missing or unhashable discriminators
    out += [{"family": "nosuch"}, {"family": "process"}, {"family": "process", "action": ["exec"]}, {}]
    return out


def _clauses(rule) -> list:
    return [s.where for s in rule.steps] + ([rule.until.where] if rule.until else [])


@pytest.mark.parametrize("platform", ["linux", "windows"])
def test_no_rule_that_can_hold_is_skipped(platform: str) -> None:
    rules = [r for r in RULES if r.platform in (platform, "any")]
    index = RuleIndex(rules)
    checked = 0
    for ev in _examples():
        given = {r.name for r in index.rules_for(ev)}
        for rule in rules:
            try:
                holds = any(where(ev) for where in _clauses(rule))
            except TypeError:
                continue
            if holds:
                checked += 1
                assert rule.name in given, (rule.name, ev)
    assert checked > len(rules)


def test_index_narrows_the_common_events() -> None:
    index = RuleIndex([r for r in RULES if r.platform == "linux"])
    fork = index.rules_for({"family": "process", "action": "fork"})
    assert len(fork) < len([r for r in RULES if r.platform == "linux"]) / 4


def test_gates() -> None:
    assert gate_of({"family": "access", "request": ["A", "B"], "result": {"eq": 0}, "pid": {"ne_field": "x"}}) == {
        "family": {"access"}, "request": {"A", "B"}, "result": {0}}
    assert gate_of({"any": [{"family": "access", "x": 1}, {"family": "signal"}]}) == {"family": {"access", "signal"}}
    assert gate_of({"family": ["a", "b"], "all": [{"family": "a"}]}) == {"family": {"a"}}
    assert gate_of({"not": {"family": "a"}}) == {}
