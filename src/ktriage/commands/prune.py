"""`ktriage prune`: retention — delete the events older than N days."""

from __future__ import annotations

import argparse
import sys
import time

from ktriage.store.access import open_store


def main(args: argparse.Namespace) -> int:
    store = open_store(args.db)
    try:
        deleted = store.prune(time.time_ns() - int(args.older_than * 86400e9))
    finally:
        store.close()
    print(f"ktriage: pruned {sum(deleted.values())} events older than {args.older_than:g} days: "
          + ", ".join(f"{t} {n}" for t, n in deleted.items() if n), file=sys.stderr)
    return 0
