"""`ktriage detect`: the rules replayed over stored or captured events (sources/replay.py), as live saw them."""

from __future__ import annotations

import argparse
import sys

from ktriage.detect.rules import builtin_rules
from ktriage.errors import UsageError
from ktriage.render import detections as render_detections
from ktriage.sources.replay import jsonl_events, replay, stored_events
from ktriage.store.readonly import open_readonly


def main(args: argparse.Namespace) -> int:
    if args.events is not None:
        if not args.events.is_file():
            raise UsageError(f"{args.events}: no such file")
        events = list(jsonl_events(args.events))
    else:
        events = list(stored_events(open_readonly(args.db, time_limit_s=None)))  # a replay reads every row
    platform = "windows" if any(str(e.get("source", "")).startswith("evtx:") for e in events[:1]) else "linux"
    found = [d for d in replay(events, builtin_rules(platform)) if d["severity"] >= args.min_severity]
    render_detections.write(sys.stdout, args.format, found)
    return 0
