"""Command line: ``main(argv) -> int`` is the only place errors become exit codes.

Each verb runs in its module of commands/ (COMMANDS). Data goes to stdout; progress, logs and
errors go to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import sys
from pathlib import Path

from ktriage import __version__
from ktriage.errors import KtriageError
from ktriage.render.ingest_summary import DEFAULT_ROWS as DEFAULT_SUMMARY_ROWS
from ktriage.render.rows import FORMATS

# Each verb runs in its module of commands/, imported when it runs with what it needs (the sensor,
# psycopg, the broker, the UI): `ktriage ingest` of a file starts without loading any of them.

log = logging.getLogger("ktriage")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _seconds(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 (none) or more")
    return value


def _ring_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    try:
        value = int(text[:-1]) * units[text[-1].lower()] if text[-1:].lower() in units else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 16M)") from None
    if value < 4096 or value & (value - 1):
        raise argparse.ArgumentTypeError(f"{text!r} must be a power of two of at least 4K")
    return value


STREAM_ALIASES = {"handle": "access"}  # the seed's stream name


def _streams(text: str) -> frozenset[str]:
    from ktriage.model.families import KERNEL_FAMILIES

    names = {STREAM_ALIASES.get(n.strip(), n.strip()) for n in text.split(",") if n.strip()}
    if not names:
        raise argparse.ArgumentTypeError("no stream named")
    unknown = sorted(names - set(KERNEL_FAMILIES) - {"all"})
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown stream {', '.join(unknown)} (streams: {','.join(KERNEL_FAMILIES)})")
    return frozenset(KERNEL_FAMILIES) if "all" in names else frozenset(names)


MAX_JOBS = 256


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1..{MAX_JOBS}")
    return value


def _depth(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _target_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--streams", type=_streams, default=None, metavar="LIST",
                   help="families to report, comma-separated (default all): process,thread,image,file,network,"
                        "access,memory,module,api,signal")
    p.add_argument("--depth", type=_depth, default=0xFFFFFFFF, metavar="N",
                   help="follow children of a target this many generations down (default: all)")


def _fleet_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--forward", metavar="URL", help="also ship every event to this central postgresql:// store "
                   "(TLS and passwords as in any libpq URL: ?sslmode=verify-full&sslrootcert=…, PGPASSFILE)")
    p.add_argument("--spool", type=Path, default=Path("/var/lib/ktriage/spool"),
                   help="where events wait while the central store is unreachable (default /var/lib/ktriage/spool)")
    p.add_argument("--host-id", help="the host name written on every row (default: this host's name)")


def _record_parser(sub: argparse._SubParsersAction) -> None:
    rec = sub.add_parser("record", help="record this host's kernel events into a database")
    rec.add_argument("--db", default="ktriage.db",
                     help="SQLite file or postgresql:// URL (created or migrated, never dropped)")
    rec.add_argument("--duration", type=_positive_float, help="stop after this many seconds (default: Ctrl-C)")
    rec.add_argument("--pid", type=int, nargs="+", default=[], metavar="PID",
                     help="only these processes and their descendants")
    rec.add_argument("--ring-size", type=_ring_size, default=16 << 20, metavar="BYTES",
                     help="BPF ring buffer size, power of two (default 16M)")
    rec.add_argument("--summary-interval", type=_positive_float, default=10.0, metavar="S",
                     help="seconds between summary lines when stderr is not a terminal")
    rec.add_argument("--stop-bound", type=_positive_float, default=5.0, metavar="S",
                     help="seconds the sensor may stay stopped before its watchdog reports it (default 5)")
    _target_options(rec)
    _fleet_options(rec)


def _watch_parser(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("watch", help="render a process and its children live (seed preview layout or JSON lines)",
                       usage="ktriage watch [options] (--pid PID [PID ...] | -- COMMAND [ARGS ...])")
    w.add_argument("--pid", type=int, nargs="+", default=[], metavar="PID", help="processes to watch")
    w.add_argument("--format", choices=("text", "jsonl"), default="text")
    w.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    w.add_argument("--duration", type=_positive_float, help="stop after this many seconds")
    _target_options(w)
    w.add_argument("command", nargs=argparse.REMAINDER, help="a command to launch and watch (after --)")


def _ingest_parser(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("ingest", help="ingest Windows event logs (EVTX, OTRF/Winlogbeat JSON) and detect",
                       description="Exit status: 0 when everything was read, 6 when something could not be "
                                   "(each unreadable part is reported; what could be read is stored).")
    i.add_argument("paths", type=Path, nargs="+", metavar="FILE", help="files or directories (walked)")
    i.add_argument("--db", default="ktriage.db", help="SQLite file or postgresql:// URL (created or migrated)")
    i.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="the progress bar on stderr (auto: when stderr is a terminal)")
    i.add_argument("--summary-rows", type=_depth, default=DEFAULT_SUMMARY_ROWS, metavar="N",
                   help=f"files shown one by one in the final summary, most severe first; the rest are summed in "
                        f"one row (default {DEFAULT_SUMMARY_ROWS}, 0: every file)")
    i.add_argument("--jobs", type=_jobs, default=None, metavar="N",
                   help="worker processes reading files in parallel (default: the CPUs; 1: all in this process)")


def _prune_parser(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("prune", help="retention: delete events older than N days")
    pr.add_argument("--db", default="ktriage.db", help="SQLite file or postgresql:// URL")
    pr.add_argument("--older-than", type=_positive_float, required=True, metavar="DAYS")


def _detections_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("detections", help="list the detections stored in a database")
    d.add_argument("--db", default="ktriage.db", help="SQLite file or postgresql:// URL")
    d.add_argument("--format", choices=("table", "jsonl"), default="table")
    d.add_argument("--min-severity", type=int, default=1, metavar="N", help="only severity N and above")


def _detect_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("detect", help="run the detection rules over stored or recorded events (replay)")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", help="a database recorded by ktriage (SQLite file or postgresql:// URL)")
    src.add_argument("--events", type=Path, metavar="FILE", help="events as JSON lines (watch --format jsonl)")
    r.add_argument("--format", choices=("table", "jsonl"), default="table")
    r.add_argument("--min-severity", type=int, default=1, metavar="N", help="only severity N and above")


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    sv = sub.add_parser("serve", help="run the broker: sensor, engine, store and client API (Unix socket, HTTP)")
    sv.add_argument("--db", help="also record every subscribed event (SQLite file or postgresql:// URL)")
    sv.add_argument("--socket", default="/run/ktriage/broker.sock", help="Unix socket path (mode 0660)")
    sv.add_argument("--group", help="a group whose members may use the socket besides root")
    sv.add_argument("--http", metavar="HOST:PORT", help="also serve the HTTP API (loopback) with a bearer token")
    sv.add_argument("--token-file", type=Path, default=Path("/run/ktriage/token"),
                    help="bearer token for --http: a regular file of root's, mode 0600, not a symlink, holding "
                         "one random token of 32+ characters (created so when missing)")
    sv.add_argument("--queue", type=int, default=1024, help="events queued per client before drops (default 1024)")
    sv.add_argument("--idle-timeout", type=float, default=300.0, metavar="SECONDS",
                    help="close a socket connection without a request for this long (not while it streams) and "
                         "free an HTTP client without requests or a stream for this long (default 300)")
    _fleet_options(sv)


def _ui_parser(sub: argparse._SubParsersAction) -> None:
    ui = sub.add_parser("ui", help="serve the web triage UI for a database, on loopback")
    ui.add_argument("--db", default="ktriage.db", help="SQLite file or postgresql:// URL (read-only)")
    ui.add_argument("--listen", default="127.0.0.1:8780", metavar="HOST:PORT",
                    help="loopback address (default 127.0.0.1:8780)")


def _selftest_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("selftest", help="prove the sensor and detections on this host with real, self-cleaning attacks")


def _query_parser(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("query", help="run a read-only SQL query on a database")
    q.add_argument("--db", default="ktriage.db", help="SQLite file or postgresql:// URL (read-only)")
    q.add_argument("--time-limit", type=_seconds, default=30.0, metavar="SECONDS",
                   help="stop the statement once the database has spent this long on it (default 30; 0: none)")
    q.add_argument("--format", choices=FORMATS, default="table")
    q.add_argument("sql", help="the SQL statement")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ktriage", description="Kernel telemetry for threat triage.")
    p.add_argument("--version", action="version", version=f"ktriage {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr")
    sub = p.add_subparsers(dest="verb", required=True)
    _record_parser(sub)
    _watch_parser(sub)
    _ingest_parser(sub)
    _prune_parser(sub)
    _detections_parser(sub)
    _detect_parser(sub)
    _serve_parser(sub)
    _ui_parser(sub)
    _selftest_parser(sub)
    _query_parser(sub)
    return p


# verb -> the module of commands/ that runs it, imported only when it runs
COMMANDS = ("record", "watch", "ingest", "prune", "detections", "detect", "serve", "ui", "selftest", "query")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="ktriage: %(levelname)s: %(name)s: %(message)s", stream=sys.stderr)
    try:
        return importlib.import_module(f"ktriage.commands.{args.verb}").main(args)
    except KtriageError as exc:
        print(f"ktriage: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return 0
