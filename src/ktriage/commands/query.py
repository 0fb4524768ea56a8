"""`ktriage query`: one read-only SQL statement on a database, its rows as a table, JSON lines or CSV."""

from __future__ import annotations

import argparse
import sys

from ktriage.errors import StoreError, UsageError
from ktriage.render.rows import write_rows
from ktriage.store.access import database_errors
from ktriage.store.readonly import open_readonly


def main(args: argparse.Namespace) -> int:
    db = open_readonly(args.db, args.time_limit or None)
    try:
        cur = db.execute(args.sql)
    except database_errors() as exc:
        raise UsageError(f"query failed: {str(exc).strip().splitlines()[0]}") from exc
    columns = [d[0] for d in cur.description or ()]
    if columns:
        try:
            write_rows(sys.stdout, args.format, columns, db.rows(cur))
        except database_errors() as exc:
            raise StoreError(f"query failed while reading rows: {exc}") from exc
    return 0
