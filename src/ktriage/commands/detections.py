"""`ktriage detections`: the detections stored in a database, as a table or JSON lines."""

from __future__ import annotations

import argparse
import sys

from ktriage.errors import StoreError
from ktriage.render import detections as render_detections
from ktriage.store.access import database_errors, open_readonly


def main(args: argparse.Namespace) -> int:
    db = open_readonly(args.db)
    try:
        cur = db.execute("SELECT * FROM detection WHERE severity >= ? ORDER BY ts, seq", (args.min_severity,))
        names = [d[0] for d in cur.description]
        detections = [dict(zip(names, row)) for row in cur]
    except database_errors() as exc:
        raise StoreError(f"{args.db}: {exc}") from exc
    render_detections.write(sys.stdout, args.format, detections)
    return 0
