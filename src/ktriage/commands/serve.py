"""`ktriage serve`: the broker (broker/server.py) on its Unix socket and, with --http, loopback HTTP;
stops on SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import math
import threading
import time

from ktriage.broker.args import MAX_QUEUE
from ktriage.broker.http import HttpApi
from ktriage.broker.limits import BrokerLimits
from ktriage.broker.server import Broker
from ktriage.broker.token import load_token
from ktriage.errors import UsageError
from ktriage.pipeline.stop import StopFlag, stop_on_signals


def main(args: argparse.Namespace) -> int:
    if not (math.isfinite(args.idle_timeout) and args.idle_timeout > 0):
        raise UsageError(f"--idle-timeout {args.idle_timeout}: give a number of seconds above 0")
    if not 1 <= args.queue <= MAX_QUEUE:
        raise UsageError(f"--queue {args.queue}: give 1..{MAX_QUEUE} events")
    http = None
    if args.http:
        host, _, port = args.http.rpartition(":")
        if host not in ("127.0.0.1", "localhost", "::1", "[::1]") or not port.isdigit():
            raise UsageError(f"--http {args.http}: give a loopback HOST:PORT (e.g. 127.0.0.1:8765)")
        http = HttpApi(host.strip("[]"), int(port), load_token(args.token_file))
    try:
        broker = Broker(args.socket, db=args.db, group=args.group, queue_capacity=args.queue, forward=args.forward,
                        spool=args.spool, host_id=args.host_id, limits=BrokerLimits(idle_timeout_s=args.idle_timeout))
    except KeyError:
        raise UsageError(f"--group {args.group}: no such group") from None
    with stop_on_signals() as stop:
        watcher = threading.Thread(target=lambda: (_stop_wait(stop), broker.stopping.set()), daemon=True)
        watcher.start()
        return broker.run(http=http)


def _stop_wait(stop: StopFlag) -> None:
    while not stop.requested:
        time.sleep(0.2)
