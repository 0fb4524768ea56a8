"""`ktriage serve`: one process owns the sensor and the engine, optionally
records to the store, and serves clients (DESIGN §5; the seed's controller).

Unix socket (mode 0660, owner root, group --group; unix.py) and, when asked,
HTTP on loopback with a bearer token (http.py). The sensor runs in targeted
mode: the kernel reports only the processes some client subscribed to (and
their children); every client gets its own bounded queue (clients.py), so a
slow client never slows the sensor or another client. A client that goes — its
connection closed, its SSE stream ended, an HTTP client idle too long — is
freed with its subscriptions, and the kernel forgets every pid no other client
still wants.
"""

from __future__ import annotations

import grp
import logging
import os
import platform
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ktriage import __version__
from ktriage.broker.args import check_args, specs
from ktriage.broker.clients import BrokerClient, PidSubscription
from ktriage.broker.limits import BrokerLimits
from ktriage.broker.protocol import DEFAULT_SOCKET, MAX_FRAME, VERSION, ProtocolError, check_request, good_id
from ktriage.broker.unix import UnixApi
from ktriage.errors import BpfError, UsageError
from ktriage.pipeline.bus import Bus, Row
from ktriage.pipeline.pipeline import Pipeline
from ktriage.sensor.sensor import SensorOptions
from ktriage.sources.linux.live import POLL_MS, Live, LiveSource, live_pipeline, require_root
from ktriage.sources.linux.procs import read_exe, trees
from ktriage.store.access import Store, database_errors, describe, open_store
from ktriage.store.forwarder import Forwarder
from ktriage.store.writer import StoreWriter

log = logging.getLogger(__name__)
HTTP_PREFIX = "http:"
_REPLY_BUDGET = MAX_FRAME - 4096  # events in one get_event reply, in bytes of JSON


def _groups_of(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            line = next((x for x in f if x.startswith("Groups:")), "Groups:")
    except OSError:
        return set()
    return {int(g) for g in line.split()[1:]}


class Broker:
    def __init__(self, socket_path: str = DEFAULT_SOCKET, db: str | None = None, group: str | None = None,
                 queue_capacity: int = 1024, forward: str | None = None, spool: Path | None = None,
                 host_id: str | None = None, limits: BrokerLimits | None = None) -> None:
        self.forward, self.spool, self.host_id = forward, spool, host_id
        self.socket_path = Path(socket_path)
        self.db = db
        self.gid = grp.getgrnam(group).gr_gid if group else None
        self.queue_capacity = queue_capacity
        self.limits = limits or BrokerLimits()
        self.specs = specs(self.limits.max_pids)
        self.clients: dict[str, BrokerClient] = {}
        self.lock = threading.Lock()
        self.targets_lock = threading.RLock()  # a pid's kernel target is added and released in one order
        self.stopping = threading.Event()
        self.live: Live | None = None
        self.bus = Bus()  # the pipeline's: clients subscribe to it
        self.source: LiveSource | None = None
        self.unix = UnixApi(self, self.limits)
        self.http: Any = None
        self.events = 0
        self.started = time.monotonic()
        self._next_client = 0

    # -- lifecycle ---------------------------------------------------------------

    def run(self, ready: threading.Event | None = None, http: Any = None) -> int:
        require_root("the broker")
        self.live = live_pipeline(SensorOptions(targeted=True), host=self.host_id, bus=self.bus)
        self.source = self.live.source
        pipeline = self.live.pipeline
        pipeline.start()
        store = open_store(self.db) if self.db else None
        run_id = self._begin_run(store)
        writer = StoreWriter(store, pipeline.bus.subscribe("store", 1_000_000)) if store else None
        forwarder = (Forwarder(self.forward, pipeline.bus.subscribe("forward", 1_000_000), self.spool or Path("spool"))
                     if self.forward else None)
        listener = self._listen()
        threading.Thread(target=self.unix.accept, args=(listener,), name="ktriage-accept", daemon=True).start()
        for thread in (writer, forwarder):
            if thread:
                thread.start()
        self.http = http
        if http is not None:
            http.start(self)
        print(f"ktriage: broker serving on {self.socket_path} (protocol {VERSION})", flush=True)
        if ready:
            ready.set()
        try:
            self._pump(pipeline)
            pipeline.drain()  # every record the kernel sent: sent - received = lost holds
        finally:
            listener.close()
            self.socket_path.unlink(missing_ok=True)
            pipeline.bus.close()
            for thread in (writer, forwarder):
                if thread:
                    thread.join()
            if http is not None:
                http.stop()
            if store and writer and run_id is not None:
                self._end_run(store, run_id, pipeline.rows(writer, forwarder))
            self.source.close()
            if store:
                store.close()
        return 0

    def _begin_run(self, store: Store | None) -> int | None:
        if store is None:
            return None
        assert self.source is not None and self.source.sensor.probe is not None
        return store.begin_run(self.source.host, "ebpf", platform.release(), __version__, " ".join(sys.argv),
                               self.source.sensor.probe.works)

    @staticmethod
    def _end_run(store: Store, run_id: int, rows: list[Row]) -> None:
        """The run's end and counters (the clients' queue drops among them); a store that cannot take them
        is logged."""
        try:
            store.end_run(run_id, rows)
        except database_errors() as exc:
            log.warning("broker: the run's counters were not stored: %s", describe(exc))

    def _listen(self) -> socket.socket:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600: nobody connects before its group is set
        try:
            listener.bind(str(self.socket_path))
        finally:
            os.umask(old_umask)
        # not followed: a symlink planted in place of the socket must not hand its target to the group
        os.chown(self.socket_path, 0, self.gid if self.gid is not None else 0, follow_symlinks=False)
        if not stat.S_ISSOCK(os.lstat(self.socket_path).st_mode):
            raise UsageError(f"--socket {self.socket_path}: replaced by something else while the broker bound it")
        os.chmod(self.socket_path, 0o660)
        listener.listen(128)
        return listener

    def _pump(self, pipeline: Pipeline) -> None:
        last_expire = time.monotonic()
        while not self.stopping.is_set():
            self.events += len(pipeline.step(POLL_MS))
            if time.monotonic() - last_expire > 1.0:
                last_expire = time.monotonic()
                self._expire(last_expire)

    def _expire(self, now: float) -> None:
        """Members past their TTL leave (and the kernel, unless wanted); idle HTTP clients are freed."""
        for client in self._clients():
            self._forget(client.expire(now))
        with self.lock:
            idle = [c for c in self.clients.values() if c.name.startswith(HTTP_PREFIX) and not c.active
                    and now - c.last_seen > self.limits.idle_timeout_s]
        for client in idle:
            self.drop_client(client)

    # -- clients -------------------------------------------------------------------

    def _clients(self) -> list[BrokerClient]:
        with self.lock:
            return list(self.clients.values())

    def allowed(self, pid: int, uid: int, gid: int) -> bool:
        return uid == 0 or (self.gid is not None and (gid == self.gid or self.gid in _groups_of(pid)))

    def new_client(self, uid: int) -> BrokerClient:
        with self.lock:
            self._next_client += 1
            client = BrokerClient(f"client-{self._next_client}", uid, self.queue_capacity)
            self.clients[client.name] = client
        self.bus.attach(client)
        return client

    @contextmanager
    def http_client(self, name: str, uid: int) -> Iterator[BrokerClient]:
        """The HTTP client of that name (made on first use, within BrokerLimits.http_clients), busy while in use."""
        key = HTTP_PREFIX + name
        with self.lock:
            client = self.clients.get(key)
            if client is None:
                known = sum(1 for n in self.clients if n.startswith(HTTP_PREFIX))
                if known >= self.limits.http_clients:
                    raise ProtocolError("too_many_clients", f"{known} HTTP clients exist, the most there may be: "
                                                            f"reuse a name, or wait for an idle one to expire")
                client = self.clients[key] = BrokerClient(key, uid, self.queue_capacity)
                self.bus.attach(client)
            client.active += 1
        try:
            yield client
        finally:
            with self.lock:
                client.active -= 1
                client.last_seen = time.monotonic()

    def drop_client(self, client: BrokerClient) -> None:
        """Forget client: its queue is closed and the kernel drops every pid no other client wants."""
        with self.lock:
            if self.clients.get(client.name) is client:
                del self.clients[client.name]
        self.bus.detach(client)
        client.close()
        self._forget(client.unsubscribe_all())

    def _forget(self, pids: list[int]) -> None:
        """Remove pids from the kernel's targets unless another client still follows them."""
        if not pids:
            return
        assert self.source is not None
        with self.targets_lock:
            wanted = set().union(*(c.pids() for c in self._clients()))
            self.source.sensor.remove_targets([p for p in pids if p not in wanted])

    # -- verbs -------------------------------------------------------------------------

    def handle(self, client: BrokerClient, frame: dict[str, Any], start_stream: Callable[[], None] | None = None
               ) -> dict[str, Any]:
        request_id = frame.get("id") if good_id(frame.get("id")) else None
        try:
            request_id, verb, args = check_request(frame)
            checked = check_args(self.specs[verb], verb, args)
            result = getattr(self, f"_verb_{verb}")(client, checked, start_stream)
            return {"id": request_id, "ok": True, "result": result}
        except ProtocolError as exc:
            return exc.reply(request_id)
        except Exception as exc:  # a bug of ours: answered in the one error shape, the connection goes on
            log.exception("broker: %s failed", frame.get("verb"))
            return ProtocolError("internal", f"the broker failed: {type(exc).__name__}: {exc}").reply(request_id)

    def _verb_hello(self, client: BrokerClient, args: dict, _s: Any) -> dict[str, Any]:
        return {"protocol": VERSION, "server": f"ktriage {__version__}", "client": client.name}

    def _subscribe(self, client: BrokerClient, pids: list[int], args: dict[str, Any]) -> dict[int, int]:
        """Subscribe client to each (live) pid and its tree within the depth; returns each pid's member count."""
        if args["queue"] is not None:
            client.capacity = args["queue"]
        found = trees(pids, args["depth"])
        targets: dict[int, int] = {}
        for tree in found.values():
            for pid, generation in tree.items():
                targets[pid] = min(generation, targets.get(pid, generation))
        assert self.source is not None
        with self.targets_lock:
            for pid in pids:
                client.subscribe(PidSubscription(pid, args["streams"], args["depth"], args["ttl_s"]), found[pid])
            try:
                self.source.sensor.set_targets(targets)
            except BpfError as exc:
                raise ProtocolError("kernel_error", f"the kernel refused the targets: {exc}") from None
        return {pid: len(found[pid]) for pid in pids}

    @staticmethod
    def _require_live(pids: list[int]) -> None:
        missing = [p for p in pids if not os.path.exists(f"/proc/{p}")]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ProtocolError("no_such_process", f"no process {', '.join(map(str, missing[:5]))}{more}")

    def _verb_subscribe(self, client: BrokerClient, args: dict, _s: Any) -> dict[str, Any]:
        self._require_live([args["pid"]])
        members = self._subscribe(client, [args["pid"]], args)
        return {"pid": args["pid"], "streams": sorted(args["streams"]), "depth": args["depth"],
                "members": members[args["pid"]]}

    def _verb_unsubscribe(self, client: BrokerClient, args: dict, _s: Any) -> dict[str, Any]:
        pid = args["pid"]
        if pid not in client.subs:
            raise ProtocolError("not_subscribed", f"not subscribed to {pid}")
        gone = client.unsubscribe(pid)
        self._forget(gone)
        return {"pid": pid, "removed": len(gone)}

    def _verb_set_pids(self, client: BrokerClient, args: dict, _s: Any) -> dict[str, Any]:
        """Replace every subscription of client by these pids: one /proc walk and one kernel update in all."""
        pids = args["pids"]
        self._require_live(pids)
        self._forget(client.unsubscribe_all())
        members = self._subscribe(client, pids, args) if pids else {}
        return {"subscriptions": [{"pid": p, "members": n} for p, n in members.items()],
                "streams": sorted(args["streams"]), "depth": args["depth"]}

    def _verb_get_event(self, client: BrokerClient, args: dict, _s: Any) -> list[dict[str, Any]]:
        return client.take(args["timeout"], args["max"], budget=_REPLY_BUDGET)

    def _verb_stream(self, client: BrokerClient, args: dict, start_stream: Any) -> dict[str, Any]:
        if start_stream is None:
            raise ProtocolError("unsupported", "stream is served as Server-Sent Events over HTTP: GET /v1/stream")
        start_stream()
        return {"streaming": True}

    def _verb_stats(self, client: BrokerClient, args: dict, _s: Any) -> dict[str, Any]:
        assert self.source is not None and self.source.decoder is not None
        sent, lost = self.source.sensor.counters()
        clients = [c.stats() for c in self._clients()]
        return {"uptime_s": round(time.monotonic() - self.started, 3), "events": self.events,
                "subscriptions": sum(c["subscriptions"] for c in clients), "client": client.stats(),
                "clients": clients, "kernel_targets": self.source.sensor.target_count(),
                "connections": self._connection_stats(), "limits": self.limits.as_dict(),
                "stages": {"kernel_sent": sum(sent.values()), "kernel_lost": sum(lost.values()),
                           "decode_errors": self.source.decoder.errors,
                           "client_dropped": sum(c["dropped"] for c in clients)}}

    def _connection_stats(self) -> dict[str, int]:
        out = self.unix.stats()
        if self.http is not None:
            out.update({f"http_{k}": v for k, v in self.http.stats().items()})
        return out

    def _verb_query_image(self, client: BrokerClient, args: dict, _s: Any) -> dict[str, Any]:
        pid = args["pid"]
        assert self.source is not None and self.source.decoder is not None
        image = self.source.decoder.procs.images.get(pid) or read_exe(pid)
        if not image:
            raise ProtocolError("no_such_process", f"no image known for process {pid}")
        return {"pid": pid, "image": image}

    def _verb_shutdown(self, client: BrokerClient, args: dict, _s: Any) -> dict[str, Any]:
        if client.uid != 0:
            raise ProtocolError("forbidden", "only root may shut the broker down")
        self.stopping.set()
        return {"stopping": True}
