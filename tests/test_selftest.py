"""`ktriage selftest` passes on this host, in the seed's suite format."""

from __future__ import annotations

import re

import pytest

from conftest import ktriage

pytestmark = pytest.mark.root


def test_selftest_passes_every_check(root: None) -> None:
    out = ktriage("selftest", timeout=300)
    lines = out.stdout.splitlines()
    assert out.returncode == 0, out.stdout + out.stderr
    checks = [line for line in lines if line.startswith("[")]
    assert all(re.match(r"\[(PASS|SKIP)\]\[T\d{4}\] .+ \[\+[\d.]+ms suite=[\d.]+ms\]$", c) for c in checks), checks
    passed = sum(c.startswith("[PASS]") for c in checks)
    assert lines[-1] == f"{passed} passed, 0 failed, {len(checks) - passed} skipped"
    assert passed >= 20
