"""Rules are data, and every rule proves itself: a positive example fires it,
a benign near-miss does not (the lint fails on a rule without both)."""

from __future__ import annotations

import pytest

from ktriage.detect.engine import Engine
from ktriage.detect.rules import RuleError, builtin_rules, load_file, rule_from_dict

RULES = builtin_rules()


def events(raw: list[dict]) -> list[dict]:
    return [dict({"ts": (i + 1) * 1_000_000, "seq": i, "source": "test", "host": "h"}, **e)
            for i, e in enumerate(raw)]


def test_every_rule_has_a_positive_example_and_a_benign_near_miss() -> None:
    missing = [r.name for r in RULES if not r.tests.get("positive") or not r.tests.get("benign")]
    assert missing == []


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_positive_example_fires(rule) -> None:
    fired = Engine([rule]).process_many(events(rule.tests["positive"]))
    assert fired and {d["name"] for d in fired} <= set(rule.names())
    d = fired[-1]
    assert d["severity"] in {rule.severity} | {lv.severity for lv in rule.levels}
    assert d["reason"] and d["event_ids"].startswith("[")


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_benign_near_miss_stays_quiet(rule) -> None:
    assert Engine([rule]).process_many(events(rule.tests["benign"])) == []


def test_every_rule_documents_technique_and_seed_mapping() -> None:
    assert [r.name for r in RULES if not r.technique] == []
    assert all(r.reason or r.levels for r in RULES)


def test_bad_rules_are_refused_with_their_location(tmp_path) -> None:
    with pytest.raises(RuleError, match="bad.yml: rule X.where: unknown operator 'startwith' on field 'path'"):
        path = tmp_path / "bad.yml"
        path.write_text("- {name: X, severity: 3, where: {path: {startwith: /etc}}}\n")
        load_file(path)
    with pytest.raises(RuleError, match="missing 'severity'"):
        rule_from_dict({"name": "Y", "where": {"family": "file"}}, "inline")


def test_string_operators_refuse_non_strings() -> None:
    with pytest.raises(RuleError, match="quote values holding ':'"):
        rule_from_dict({"name": "Z", "severity": 1, "where": {"path": {"startswith": [{"/memfd": None}]}}}, "x")
