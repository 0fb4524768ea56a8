"""`record --pid`: only the targets and their descendants reach user space."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import Recording, generate

pytestmark = pytest.mark.root

TARGET = ("import subprocess, sys\n"
          "sys.stdin.readline()\n"
          "subprocess.run(['/bin/sh', '-c', '/bin/sh -c \"/bin/true grandchild\"; exit 3'])\n")


def test_pid_set_follows_descendants_and_excludes_others(root: None, tmp_path) -> None:
    target = subprocess.Popen([sys.executable, "-c", TARGET], stdin=subprocess.PIPE, text=True)
    rec = Recording(tmp_path / "target.db", "--pid", str(target.pid))
    try:
        unrelated = generate("file", str(tmp_path))
        target.communicate("go\n", timeout=30)
        rows = rec.wait_rows("SELECT * FROM process WHERE action='exec' AND cmdline='/bin/true grandchild'")
        rec.wait_rows("SELECT 1 FROM process WHERE action='exit' AND pid=?", (target.pid,))
    finally:
        rec.stop()
    assert len(rows) == 1
    grandchild = rows[0]
    child = rec.rows("SELECT * FROM process WHERE action='fork' AND child_pid=?", (grandchild["ppid"],))
    assert len(child) == 1, "the child that forked the grandchild is recorded too"
    assert rec.rows("SELECT count(*) AS n FROM file WHERE pid=?", (unrelated["pid"],))[0]["n"] == 0
    pids = {r["pid"] for t in ("process", "thread", "image", "file", "network")
            for r in rec.rows(f"SELECT DISTINCT pid FROM {t}")}
    assert unrelated["pid"] not in pids
    tree = {target.pid}
    for fork in rec.rows("SELECT pid, child_pid FROM process WHERE action='fork' ORDER BY seq"):
        if fork["pid"] in tree:
            tree.add(fork["child_pid"])
    assert target.pid in pids and pids <= tree, "every recorded process descends from the target"


def _run_target(tmp_path, name: str, *args: str) -> tuple[Recording, int]:
    target = subprocess.Popen([sys.executable, "-c", TARGET], stdin=subprocess.PIPE, text=True)
    rec = Recording(tmp_path / name, "--pid", str(target.pid), *args)
    try:
        target.communicate("go\n", timeout=30)
        rec.wait_rows("SELECT 1 FROM signal LIMIT 1", timeout=2)  # let the last records arrive
    finally:
        rec.stop()
    return rec, target.pid


def test_stream_mask_drops_unwanted_families_in_the_kernel(root: None, tmp_path) -> None:
    rec, _ = _run_target(tmp_path, "streams.db", "--streams", "process")
    stats = {(r["family"], r["counter"]): r["value"]
             for r in rec.rows("SELECT family, counter, value FROM stats WHERE stage='bpf'")}
    own = rec.rows("SELECT value FROM stats WHERE stage='decode' AND counter='own'")[0]["value"]
    assert stats[("process", "sent")] > 0
    assert stats[("file", "sent")] == own == 2, "only the recorder's own calibration opens"
    for family in ("thread", "image", "network", "access", "memory", "api", "signal"):
        assert stats[(family, "sent")] == 0, family
    tamper = rec.rows("SELECT count(*) AS n FROM module WHERE target_is_sensor = 1")[0]["n"]
    assert stats[("module", "sent")] == tamper, "module: only bpf() on ktriage's own objects, never masked"
    assert rec.rows("SELECT count(*) AS n FROM image")[0]["n"] == 0, "derived image events follow the mask too"


def test_depth_limits_how_far_children_are_followed(root: None, tmp_path) -> None:
    rec, pid = _run_target(tmp_path, "depth.db", "--depth", "1")
    execs = [r["cmdline"] for r in rec.rows("SELECT cmdline FROM process WHERE action='exec'")]
    assert any(c.startswith("/bin/sh -c") for c in execs), "the child (depth 1) is followed"
    assert "/bin/true grandchild" not in execs, "the grandchild (depth 2) is not"
