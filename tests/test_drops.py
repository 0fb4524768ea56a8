"""Drop accounting is exact: what the kernel sent minus what was received is
what was counted as lost, and every received event is stored."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import Recording

pytestmark = pytest.mark.root

BURST = 200_000


def _stats(rec: Recording) -> dict[tuple[str, str, str], int]:
    rows = rec.rows("SELECT stage, family, counter, value FROM stats")
    return {(r["stage"], r["family"], r["counter"]): r["value"] for r in rows}


def test_burst_sent_minus_received_equals_counted_drops(root: None, tmp_path) -> None:
    gen = subprocess.Popen([sys.executable, "-m", "ktriage.selftest.generators", "burst", str(tmp_path), str(BURST)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    rec = Recording(tmp_path / "burst.db", "--pid", str(gen.pid), "--ring-size", "64K")
    try:
        gen.stdin.write("go\n")
        gen.stdin.flush()
        facts = json.loads(gen.stdout.readline())
        gen.wait(timeout=60)
        rec.wait_rows("SELECT 1 FROM process WHERE action='exit' AND pid=?", (gen.pid,), timeout=10)
        # losing events is itself reported, and so is the return to normal once nothing more is lost
        drift = rec.wait_rows("SELECT * FROM detection WHERE name='SENSOR_INTEGRITY_DRIFT'", timeout=12)
        cleared = rec.wait_rows("SELECT * FROM detection WHERE name='SENSOR_INTEGRITY_CLEARED'", timeout=12)
    finally:
        summary = rec.stop()
    assert len(drift) == 1 and drift[0]["severity"] == 5 and "lost in the kernel" in drift[0]["reason"]
    assert len(cleared) == 1 and cleared[0]["ts"] > drift[0]["ts"]
    stats = _stats(rec)
    sent, lost = stats[("bpf", "file", "sent")], stats[("bpf", "file", "lost")]
    received = stats[("decode", "file", "received")]
    stored = rec.rows("SELECT count(*) AS n FROM file WHERE pid=? AND path=?", (gen.pid, facts["path"]))[0]["n"]
    own = stats[("decode", "", "own")]  # the recorder's two calibration opens
    assert own == 2
    assert sent - own == BURST, summary
    assert lost > 0, "a 64K ring must overflow under this burst, or the test proves nothing"
    assert sent - received == lost
    assert stats[("decode", "", "errors")] == 0 and stats[("queue", "store", "dropped")] == 0
    assert stored == received - own
    seqs = [r["seq"] for r in rec.rows("SELECT seq FROM file WHERE pid=? ORDER BY seq", (gen.pid,))]
    assert seqs == sorted(set(seqs)), "sequence numbers are unique"
    total_lost = sum(v for (stage, _f, counter), v in stats.items() if stage == "bpf" and counter == "lost")
    assert f"lost in kernel {total_lost}" in summary
