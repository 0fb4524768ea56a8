"""Directories that ktriage, running as root, reads back what it wrote: the BPF
object cache (programs it loads into the kernel) and the fleet spool (events it
ships). Another user who can change such a directory, or rename one of its
parents, could make root load their BPF program or forge events, so each one
is created private (0700) and refused when it is not."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ktriage.errors import SetupError


def _unsafe(path: Path, st: os.stat_result, own: bool) -> str | None:
    """Why another user could change what lies under path, or None."""
    if st.st_uid not in (0, os.geteuid()):
        return f"it is owned by uid {st.st_uid}"
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and (own or not st.st_mode & stat.S_ISVTX):  # a sticky parent (/tmp) keeps our entries ours
        return "group or others can write to it"
    return None


def private_dir(path: Path, what: str) -> Path:
    """path, created 0700 when missing (and made 0700 when others could only read it); SetupError
    naming it when another user could change it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    resolved = path.resolve()
    st = resolved.stat()
    if st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        resolved.chmod(0o700)
    for current in (resolved, *resolved.parents):
        st = current.lstat()
        reason = _unsafe(current, st, own=current == resolved)
        if reason:
            shown = path if current == resolved else f"{path} (its parent {current})"
            raise SetupError(f"{what} {shown} is not private ({reason}): ktriage runs as root and does not "
                             "trust files another user can change")
    return path
