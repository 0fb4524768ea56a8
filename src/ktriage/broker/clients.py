"""Per-client state: subscriptions that follow children, and a bounded queue.

A subscription is a root pid with streams, a child depth and a TTL. Members
join through fork events seen in the stream (a child of a member, within the
depth), and leave on exit, when their root is unsubscribed, or when the TTL of a
dynamically added member runs out. Queue policy: at most ``capacity`` events;
when full, the newest event is dropped and counted; every event a client gets
carries the client's own sequence number, so a gap shows a drop. A pull takes
at most a byte budget of events, so that its reply fits in one frame.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ktriage.model.event import Event


@dataclass
class PidSubscription:
    root: int
    streams: frozenset[str]
    depth: int
    ttl_s: float


@dataclass
class Member:
    root: int
    depth: int
    joined: float


class BrokerClient:
    stage = "clients"  # a subscriber of the pipeline's bus (bus.py: the drop policy)

    def __init__(self, name: str, uid: int, capacity: int = 1024) -> None:
        self.name = name
        self.uid = uid
        self.capacity = capacity
        self.subs: dict[int, PidSubscription] = {}
        self.members: dict[int, Member] = {}
        self.queue: deque[dict[str, Any]] = deque()
        self.seq = 0
        self.delivered = 0
        self.dropped = 0
        self.cond = threading.Condition()
        self.closed = False
        self.last_seen = time.monotonic()  # HTTP clients: when the last request ended
        self.active = 0  # HTTP clients: requests in flight and open streams
        self.streaming = False

    # -- subscriptions -------------------------------------------------------

    def subscribe(self, sub: PidSubscription, tree: dict[int, int]) -> None:
        """Subscribe to a root and its live descendants (pid -> generation) within the depth."""
        now = time.monotonic()
        with self.cond:
            self.subs[sub.root] = sub
            for pid, depth in tree.items():
                self.members.setdefault(pid, Member(sub.root, depth, now))
            self.members[sub.root] = Member(sub.root, 0, now)

    def unsubscribe(self, root: int) -> list[int]:
        """Remove a root and every member that came through it; returns the pids removed."""
        with self.cond:
            self.subs.pop(root, None)
            gone = [pid for pid, m in self.members.items() if m.root == root]
            for pid in gone:
                del self.members[pid]
            return gone

    def unsubscribe_all(self) -> list[int]:
        """Remove every subscription and member; returns the pids removed."""
        with self.cond:
            gone = list(self.members)
            self.subs.clear()
            self.members.clear()
            return gone

    def pids(self) -> set[int]:
        with self.cond:
            return set(self.members)

    def _follow(self, ev: Event) -> None:
        if ev["family"] == "process" and ev.get("action") == "fork":
            parent = self.members.get(ev["pid"])
            sub = self.subs.get(parent.root) if parent else None
            if parent and sub and parent.depth < sub.depth:
                self.members.setdefault(ev["child_pid"], Member(parent.root, parent.depth + 1, time.monotonic()))
        elif ev["family"] == "process" and ev.get("action") == "exit" and ev["pid"] not in self.subs:
            self.members.pop(ev["pid"], None)

    def expire(self, now: float) -> list[int]:
        """Remove the members that joined more than their subscription's TTL ago; returns their pids."""
        with self.cond:
            gone = []
            for pid, m in list(self.members.items()):
                sub = self.subs.get(m.root)
                if pid != m.root and sub and sub.ttl_s and now - m.joined > sub.ttl_s:
                    del self.members[pid]
                    gone.append(pid)
            return gone

    def matches(self, ev: Event) -> bool:
        pid = ev.get("actor_pid") if ev["family"] == "detection" else ev.get("pid")
        member = self.members.get(pid)
        if member is None and ev["family"] == "detection":
            member = self.members.get(ev.get("target_pid"))
        return member is not None and ev["family"] in self.subs[member.root].streams

    # -- queue -----------------------------------------------------------------

    def offer(self, events: list[Event]) -> None:
        with self.cond:
            for ev in events:
                self._follow(ev)
                if not self.subs or not self.matches(ev):
                    continue
                self.seq += 1  # taken before the queue is checked: a dropped event leaves a gap
                if len(self.queue) >= self.capacity:
                    self.dropped += 1
                    continue
                self.queue.append({"event": ev, "seq": self.seq})
            if self.queue:
                self.cond.notify_all()

    def take(self, timeout: float, limit: int = 1, budget: int | None = None) -> list[dict[str, Any]]:
        """Up to limit events, oldest first, waiting up to timeout for the first; with a budget, no more
        than fit in that many bytes of JSON (the first is taken whatever its size)."""
        with self.cond:
            if not self.queue and not self.closed:
                self.cond.wait(timeout)
            out: list[dict[str, Any]] = []
            used = 0
            while self.queue and len(out) < limit:
                if budget is not None:
                    used += len(json.dumps(self.queue[0], separators=(",", ":"))) + 1
                    if out and used > budget:
                        break
                out.append(self.queue.popleft())
            self.delivered += len(out)
            return out

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def stats(self) -> dict[str, Any]:
        with self.cond:
            return {"client": self.name, "subscriptions": len(self.subs), "members": len(self.members),
                    "queue_depth": len(self.queue), "queue_capacity": self.capacity, "seq": self.seq,
                    "delivered": self.delivered, "dropped": self.dropped}
