"""`ktriage serve`: one process owns the sensor and the engine, optionally
records to the store, and serves clients (DESIGN §5; the seed's controller).

Unix socket (mode 0660, owner root, group --group): peers are checked with
SO_PEERCRED — root, or a member of the group. HTTP on loopback, when asked,
needs ``Authorization: Bearer <token>``. The sensor runs in targeted mode: the
kernel reports only the processes some client subscribed to (and their
children); every client gets its own bounded queue (clients.py), so a slow
client never slows the sensor or another client.
"""

from __future__ import annotations

import grp
import logging
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

from ktriage import __version__
from ktriage.broker.clients import Client, Subscription, parse_streams
from ktriage.broker.protocol import VERSION, ProtocolError, check_request, encode, read_frame
from ktriage.bus import Bus
from ktriage.live import POLL_MS, LiveSource, require_root
from ktriage.sensor.procs import descendants, read_exe
from ktriage.sensor.sensor import SensorOptions
from ktriage.store.access import open_store
from ktriage.store.forwarder import Forwarder
from ktriage.store.writer import StoreWriter

log = logging.getLogger(__name__)
DEFAULT_SOCKET = "/run/ktriage/broker.sock"
MAX_QUEUE = 65536  # the most a client may ask for
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    return _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))


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
                 host_id: str | None = None) -> None:
        self.forward, self.spool, self.host_id = forward, spool, host_id
        self.socket_path = Path(socket_path)
        self.db = db
        self.gid = grp.getgrnam(group).gr_gid if group else None
        self.queue_capacity = queue_capacity
        self.clients: dict[str, Client] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.source: LiveSource | None = None
        self.events = 0
        self.started = time.monotonic()
        self._next_client = 0

    # -- lifecycle ---------------------------------------------------------------

    def run(self, ready: threading.Event | None = None, http: Any = None) -> int:
        require_root("the broker")
        self.source = LiveSource(SensorOptions(targeted=True), host=self.host_id)
        self.source.start()
        store = open_store(self.db) if self.db else None
        bus = Bus()
        writer = StoreWriter(store, bus.subscribe("store", 1_000_000)) if store else None
        forwarder = (Forwarder(self.forward, bus.subscribe("forward", 1_000_000), self.spool or Path("spool"))
                     if self.forward else None)
        listener = self._listen()
        threading.Thread(target=self._accept, args=(listener,), name="ktriage-accept", daemon=True).start()
        for thread in (writer, forwarder):
            if thread:
                thread.start()
        if http is not None:
            http.start(self)
        print(f"ktriage: broker serving on {self.socket_path} (protocol {VERSION})", flush=True)
        if ready:
            ready.set()
        try:
            self._pump(bus)
        finally:
            listener.close()
            self.socket_path.unlink(missing_ok=True)
            bus.close()
            for thread in (writer, forwarder):
                if thread:
                    thread.join()
            if http is not None:
                http.stop()
            self.source.close()
            if store:
                store.close()
        return 0

    def _listen(self) -> socket.socket:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        os.chown(self.socket_path, 0, self.gid if self.gid is not None else 0)
        os.chmod(self.socket_path, 0o660)
        listener.listen(64)
        return listener

    def _pump(self, bus: Bus) -> None:
        assert self.source is not None
        last_expire = time.monotonic()
        while not self.stopping.is_set():
            events = self.source.poll(POLL_MS)
            if events:
                self.events += len(events)
                bus.publish(events)
                for client in self._clients():
                    client.offer(events)
            if time.monotonic() - last_expire > 1.0:
                last_expire = time.monotonic()
                for client in self._clients():
                    client.expire(last_expire)

    def _clients(self) -> list[Client]:
        with self.lock:
            return list(self.clients.values())

    # -- connections ---------------------------------------------------------------

    def allowed(self, pid: int, uid: int, gid: int) -> bool:
        return uid == 0 or (self.gid is not None and (gid == self.gid or self.gid in _groups_of(pid)))

    def _accept(self, listener: socket.socket) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def new_client(self, uid: int, name: str | None = None) -> Client:
        with self.lock:
            self._next_client += 1
            client = Client(name or f"client-{self._next_client}", uid, self.queue_capacity)
            self.clients[client.name] = client
            return client

    def drop_client(self, client: Client) -> None:
        for root in list(client.subs):
            self._release_roots(client, root)
        client.close()
        with self.lock:
            self.clients.pop(client.name, None)

    def _serve(self, conn: socket.socket) -> None:
        pid, uid, gid = peer_credentials(conn)
        if not self.allowed(pid, uid, gid):
            conn.sendall(encode(ProtocolError("forbidden", f"uid {uid} may not use the broker (root or the "
                                                            "broker group only)").reply(None)))
            conn.close()
            return
        client = self.new_client(uid)
        send_lock = threading.Lock()
        try:
            self._requests(conn, client, send_lock)
        except OSError as exc:
            log.debug("%s: connection ended: %s", client.name, exc)
        finally:
            self.drop_client(client)
            conn.close()

    def _requests(self, conn: socket.socket, client: Client, send_lock: threading.Lock) -> None:
        while not self.stopping.is_set():
            try:
                frame = read_frame(conn)
            except ProtocolError as exc:
                with send_lock:
                    conn.sendall(encode(exc.reply(None)))
                continue
            if frame is None:
                return
            reply = self.handle(client, frame, lambda: self._stream(conn, client, send_lock))
            with send_lock:
                conn.sendall(encode(reply))

    def _stream(self, conn: socket.socket, client: Client, send_lock: threading.Lock) -> None:
        def push() -> None:
            while not client.closed and not self.stopping.is_set():
                for item in client.take(0.5, limit=256):
                    with send_lock:
                        conn.sendall(encode(item))
        threading.Thread(target=push, name=f"ktriage-push-{client.name}", daemon=True).start()

    # -- verbs -------------------------------------------------------------------------

    def handle(self, client: Client, frame: dict[str, Any], start_stream: Any = None) -> dict[str, Any]:
        request_id = frame.get("id")
        try:
            request_id, verb, args = check_request(frame)
            result = getattr(self, f"_verb_{verb}")(client, args, start_stream)
            return {"id": request_id, "ok": True, "result": result}
        except ProtocolError as exc:
            return exc.reply(request_id)

    @staticmethod
    def _int(args: dict[str, Any], name: str, default: Any = None) -> int:
        value = args.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ProtocolError("bad_args", f"{name} must be a non-negative integer")
        return value

    def _verb_hello(self, client: Client, args: dict, _s: Any) -> dict[str, Any]:
        return {"protocol": VERSION, "server": f"ktriage {__version__}", "client": client.name}

    def _verb_subscribe(self, client: Client, args: dict, _s: Any) -> dict[str, Any]:
        pid = self._int(args, "pid")
        if not os.path.exists(f"/proc/{pid}"):
            raise ProtocolError("no_such_process", f"no process {pid}")
        sub = Subscription(pid, parse_streams(args.get("streams", "all")), self._int(args, "depth", 3),
                           float(args.get("ttl_s", 120)))
        if "queue" in args:
            client.capacity = min(max(self._int(args, "queue"), 1), MAX_QUEUE)
        tree = {p: d for p, d in descendants({pid}).items() if d <= sub.depth}
        client.subscribe(sub, tree)
        assert self.source is not None
        self.source.sensor.set_targets(tree)
        return {"pid": pid, "streams": sorted(sub.streams), "depth": sub.depth, "members": len(tree)}

    def _release_roots(self, client: Client, root: int) -> list[int]:
        gone = client.unsubscribe(root)
        still = set().union(*(c.pids() for c in self._clients() if c is not client))
        assert self.source is not None
        self.source.sensor.remove_targets([p for p in gone if p not in still])
        return gone

    def _verb_unsubscribe(self, client: Client, args: dict, _s: Any) -> dict[str, Any]:
        pid = self._int(args, "pid")
        if pid not in client.subs:
            raise ProtocolError("not_subscribed", f"not subscribed to {pid}")
        return {"pid": pid, "removed": len(self._release_roots(client, pid))}

    def _verb_set_pids(self, client: Client, args: dict, s: Any) -> dict[str, Any]:
        pids = args.get("pids")
        if not isinstance(pids, list) or not all(isinstance(p, int) and p > 0 for p in pids):
            raise ProtocolError("bad_args", "pids must be a list of positive integers")
        missing = [p for p in pids if not os.path.exists(f"/proc/{p}")]
        if missing:
            raise ProtocolError("no_such_process", f"no process {missing}")
        for root in list(client.subs):
            self._release_roots(client, root)
        return {"subscriptions": [self._verb_subscribe(client, dict(args, pid=p), s) for p in pids]}

    def _verb_get_event(self, client: Client, args: dict, _s: Any) -> list[dict[str, Any]]:
        timeout = args.get("timeout", 1.0)
        if not isinstance(timeout, (int, float)) or not 0 <= timeout <= 60:
            raise ProtocolError("bad_args", "timeout must be 0..60 seconds")
        return client.take(float(timeout), self._int(args, "max", 1))

    def _verb_stream(self, client: Client, args: dict, start_stream: Any) -> dict[str, Any]:
        if start_stream is None:
            raise ProtocolError("unsupported", "stream is served as Server-Sent Events over HTTP: GET /v1/stream")
        start_stream()
        return {"streaming": True}

    def _verb_stats(self, client: Client, args: dict, _s: Any) -> dict[str, Any]:
        assert self.source is not None and self.source.decoder is not None
        sent, lost = self.source.sensor.counters()
        clients = [c.stats() for c in self._clients()]
        return {"uptime_s": round(time.monotonic() - self.started, 3), "events": self.events,
                "subscriptions": sum(c["subscriptions"] for c in clients), "client": client.stats(),
                "clients": clients, "stages": {"kernel_sent": sum(sent.values()), "kernel_lost": sum(lost.values()),
                                               "decode_errors": self.source.decoder.errors,
                                               "client_dropped": sum(c["dropped"] for c in clients)}}

    def _verb_query_image(self, client: Client, args: dict, _s: Any) -> dict[str, Any]:
        pid = self._int(args, "pid")
        assert self.source is not None and self.source.decoder is not None
        image = self.source.decoder.procs.images.get(pid) or read_exe(pid)
        if not image:
            raise ProtocolError("no_such_process", f"no image known for process {pid}")
        return {"pid": pid, "image": image}

    def _verb_shutdown(self, client: Client, args: dict, _s: Any) -> dict[str, Any]:
        if client.uid != 0:
            raise ProtocolError("forbidden", "only root may shut the broker down")
        self.stopping.set()
        return {"stopping": True}
