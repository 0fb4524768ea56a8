"""Docs the tests keep honest: every detection is in the catalog document,
every family in the architecture document, and the README's two commands exist."""

from __future__ import annotations

from pathlib import Path

from ktriage.detect.rules import builtin_rules
from ktriage.model.families import FAMILIES

ROOT = Path(__file__).resolve().parent.parent


def test_every_detection_is_documented() -> None:
    text = (ROOT / "docs" / "DETECTIONS.md").read_text()
    missing = [n for r in builtin_rules() for n in r.names() if f"`{n}`" not in text]
    assert missing == []


def test_architecture_names_every_family_and_source_file() -> None:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert [f for f in FAMILIES if f not in text] == []
    modules = sorted(p.relative_to(ROOT / "src" / "ktriage").parts[0] for p in (ROOT / "src" / "ktriage").iterdir()
                     if p.is_dir() and not p.name.startswith("__"))
    assert [m for m in modules if m not in text] == []


def test_readme_has_the_two_setup_commands_ci_uses() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "sudo scripts/setup && sudo .venv/bin/ktriage record --db ktriage.db" in readme
    assert "sudo scripts/test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/setup" in ci and "scripts/test" in ci
