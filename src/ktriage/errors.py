"""Narrow exceptions raised by library code; only ``cli.main`` turns them into
exit codes and one-line messages."""

from __future__ import annotations

import os


class KtriageError(Exception):
    """Base of every error ktriage reports to the user as one line."""

    exit_code = 1


class UsageError(KtriageError):
    """Bad input on the command line (a pid, a path, an option value)."""

    exit_code = 2


class SetupError(KtriageError):
    """The host lacks something the sensor needs (root, BTF, clang, libbpf)."""

    exit_code = 3


class BpfError(KtriageError):
    """A libbpf call failed."""

    exit_code = 4

    def __init__(self, what: str, err: int) -> None:
        self.what = what
        self.errno = err
        super().__init__(f"{what}: {os.strerror(err) if err else 'failed'} (errno {err})")


class StoreError(KtriageError):
    """The database cannot be opened, created or migrated."""

    exit_code = 5


class ReadStopped(StoreError):
    """A read reached its time limit (the same words for SQLite and PostgreSQL)."""
