"""`ktriage ui`: the web triage UI for a database, on loopback, with a per-start token."""

from __future__ import annotations

import argparse
import secrets
import sys

import uvicorn

from ktriage.errors import StoreError, UsageError
from ktriage.store.access import database_errors
from ktriage.store.readonly import open_readonly
from ktriage.store.sqlguard import limit_process_heap
from ktriage.ui.api import create_app
from ktriage.ui.sqlbox import refusal


def main(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]") if host.startswith("[") else host
    if host not in ("127.0.0.1", "localhost", "::1") or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {args.listen}: give a loopback HOST:PORT (e.g. 127.0.0.1:8780)")
    db = open_readonly(args.db)  # a clear error now rather than on the first page
    try:
        sql_off = refusal(db)
    except database_errors() as exc:
        raise StoreError(f"{db.name}: {exc}") from exc
    finally:
        db.close()
    if sql_off:
        print(f"ktriage: {sql_off}", file=sys.stderr)
    limit_process_heap()
    token = secrets.token_urlsafe(32)
    shown = f"[{host}]" if ":" in host else host
    print(f"ktriage: triage UI on http://{shown}:{port}/?token={token} for {db.name}", file=sys.stderr, flush=True)
    uvicorn.run(create_app(args.db, token=token, port=int(port), listen_host=host), host=host, port=int(port),
                log_level="warning", h11_max_incomplete_event_size=512 * 1024)
    return 0
