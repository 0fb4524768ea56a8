"""Root reads back the BPF object cache (it loads those programs) and the spool (it ships those
events): directories another user could change are refused with one line; private ones are used."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import ktriage
from ktriage.errors import SetupError
from ktriage.store.forwarder import Spool
from ktriage.trust import private_dir

NOBODY = 65534


def test_a_new_directory_is_created_private(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "a" / "cache", "the cache")
    assert made.stat().st_mode & 0o777 == 0o700


def test_an_own_directory_others_could_only_read_is_made_private(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir(mode=0o755)
    assert private_dir(tmp_path / "c", "the cache").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c").chmod(mode)
    with pytest.raises(SetupError, match=r"the cache .*/c is not private \(group or others can write to it\)"):
        private_dir(tmp_path / "c", "the cache")


def test_a_directory_of_another_user_is_refused(root: None, tmp_path: Path) -> None:
    (tmp_path / "c").mkdir(mode=0o700)
    os.chown(tmp_path / "c", NOBODY, NOBODY)
    with pytest.raises(SetupError, match=f"is not private \\(it is owned by uid {NOBODY}\\)"):
        private_dir(tmp_path / "c", "the cache")


def test_a_parent_others_can_rename_in_is_refused_unless_sticky(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(SetupError, match="its parent .*shared"):
        private_dir(shared / "cache", "the cache")
    shared.chmod(0o1777)  # like /tmp: others cannot rename or remove what is ours
    assert private_dir(shared / "cache", "the cache").is_dir()


def test_a_symlink_to_a_directory_of_another_user_is_refused(root: None, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    (tmp_path / "link").symlink_to(theirs)
    with pytest.raises(SetupError, match="owned by uid"):
        private_dir(tmp_path / "link", "the cache")


def test_a_spool_others_can_write_is_refused(tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool").chmod(0o777)
    with pytest.raises(SetupError, match="the spool"):
        Spool(tmp_path / "spool", 1 << 20)


def test_record_refuses_a_cache_another_user_owns(root: None, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chown(cache, NOBODY, NOBODY)
    proc = ktriage("record", "--db", str(tmp_path / "x.db"), "--duration", "1",
                   env=dict(os.environ, KTRIAGE_CACHE=str(cache)))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 3 and lines[-1] == (
        f"ktriage: error: the BPF object cache {cache} is not private (it is owned by uid {NOBODY}): ktriage runs "
        "as root and does not trust files another user can change"), proc.stderr
    assert not list(cache.iterdir()), "nothing was built into it"
