"""`ktriage detections`: the detections stored in a database, as a table or JSON lines."""

from __future__ import annotations

import argparse
import sys

from ktriage.errors import StoreError
from ktriage.render import detections as render_detections
from ktriage.store import reads
from ktriage.store.access import database_errors
from ktriage.store.readonly import open_readonly


def main(args: argparse.Namespace) -> int:
    db = open_readonly(args.db)
    try:
        found = reads.detections(db, reads.DetectionFilter(min_severity=args.min_severity))
    except database_errors() as exc:
        raise StoreError(f"{db.name}: {exc}") from exc
    render_detections.write(sys.stdout, args.format, found)
    return 0
