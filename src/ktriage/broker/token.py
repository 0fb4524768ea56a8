"""The HTTP API's bearer token and the file it lives in.

A file is used only when it is safe, else refused with one line naming it and
the problem: a symlink (opened with O_NOFOLLOW, so not followed), anything but
a regular file, a file not owned by the broker's user, a mode that lets group or
others read or write it (checked with fstat on the opened descriptor, not on the
path), more than MAX_BYTES, and a token that is empty, not one line of printable
ASCII, shorter than MIN_CHARS or too predictable (under MIN_BITS, estimated from
its characters' frequencies: "aaaa…" is refused, a random one is not; a patterned
one like "0123456789…" passes — the estimate cannot see patterns). A missing
file is created with O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600 holding a new
random token, so a file planted at the same moment is never written through.
"""

from __future__ import annotations

import errno
import math
import os
import secrets
import stat
from collections import Counter
from pathlib import Path

from ktriage.errors import UsageError

MIN_CHARS = 32
MIN_BITS = 100
MAX_BYTES = 4096
_FIX = "remove it and a new token is made"


def token_problem(token: str) -> str | None:
    """Why token cannot be a bearer token, or None when it can."""
    if not token:
        return f"is empty ({_FIX})"
    if not all("!" <= ch <= "~" for ch in token):
        return f"does not hold one line of printable ASCII ({_FIX})"
    if len(token) < MIN_CHARS:
        return f"holds a token shorter than {MIN_CHARS} characters ({_FIX})"
    counts = Counter(token).values()
    bits = max(0.0, -sum(n * math.log2(n / len(token)) for n in counts))
    if bits < MIN_BITS:
        return f"holds a predictable token (about {bits:.0f} bits, at least {MIN_BITS} wanted; {_FIX})"
    return None


def check_token(token: str, what: str = "the bearer token") -> str:
    problem = token_problem(token)
    if problem:
        raise UsageError(f"{what} {problem}")
    return token


def load_token(path: Path, what: str = "--token-file") -> str:
    """The token in path, refused unless the file is safe; a new random one when path does not exist."""
    try:
        return _read(path, what)
    except FileNotFoundError:
        return _create(path, what)


def _refuse(path: Path, what: str, problem: str) -> UsageError:
    return UsageError(f"{what} {path}: {problem}")


def _read(path: Path, what: str) -> str:
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(path, what, "is a symlink; give the file itself") from None
        raise _refuse(path, what, exc.strerror or str(exc)) from None
    try:
        _check_file(path, what, os.fstat(fd))
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise _refuse(path, what, f"is longer than {MAX_BYTES} bytes: not a token file")
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        token = "\0"  # not ASCII: refused below as not printable
    problem = token_problem(token)
    if problem:
        raise _refuse(path, what, problem)
    return token


def _check_file(path: Path, what: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, what, "is not a regular file")
    if st.st_uid != os.geteuid():
        raise _refuse(path, what, f"is owned by uid {st.st_uid}, not by uid {os.geteuid()} (the broker's)")
    if st.st_mode & 0o077:
        raise _refuse(path, what, f"has mode {stat.S_IMODE(st.st_mode):04o}, which lets group or others read or "
                                  f"write it: chmod 600 it")


def _create(path: Path, what: str) -> str:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:  # made between our open and this one: it must pass the same checks
        return _read(path, what)
    except OSError as exc:
        raise _refuse(path, what, f"cannot be created: {exc.strerror or exc}") from None
    token = secrets.token_urlsafe(32)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, token.encode() + b"\n")
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise _refuse(path, what, f"cannot be written: {exc.strerror or exc}") from None
    os.close(fd)
    return token
