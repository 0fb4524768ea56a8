"""Python SDK for the ktriage broker (the seed SDK's surface: open, subscribe,
unsubscribe, set_pids, get_event, iterate, stats, query_image), sync and asyncio.

    with Client() as c:
        c.subscribe(1234, streams=["access", "memory", "thread"])
        for record in c.events():          # push stream
            print(record.seq, record.family, record.data)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from ktriage.broker.protocol import DEFAULT_SOCKET, MAX_FRAME, encode, read_frame

_LEN = struct.Struct(">I")


class BrokerError(Exception):
    """The broker refused a request; ``code`` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class Record:
    """One event as delivered: the client's sequence number (a gap is a drop) and the event."""

    seq: int
    family: str
    data: dict[str, Any]

    @classmethod
    def from_frame(cls, item: dict[str, Any]) -> Record:
        return cls(item["seq"], item["event"]["family"], item["event"])


def _result(reply: dict[str, Any]) -> Any:
    if not reply.get("ok"):
        err = reply.get("error") or {}
        raise BrokerError(err.get("code", "error"), err.get("message", "request failed"))
    return reply["result"]


def _streams(streams: Any) -> Any:
    return ",".join(streams) if isinstance(streams, (list, tuple, set, frozenset)) else streams


class Client:
    def __init__(self, path: str = DEFAULT_SOCKET, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._ids = itertools.count(1)
        self._pushed: list[dict[str, Any]] = []
        self.hello = self.call("hello")

    def call(self, verb: str, **args: Any) -> Any:
        request_id = next(self._ids)
        self.sock.sendall(encode({"id": request_id, "verb": verb, "args": args}))
        while True:
            frame = read_frame(self.sock)
            if frame is None:
                raise BrokerError("closed", "the broker closed the connection")
            if "event" in frame:  # pushed while we wait for the reply
                self._pushed.append(frame)
            elif frame.get("id") in (request_id, None):
                return _result(frame)

    def subscribe(self, pid: int, streams: Any = "all", depth: int = 3, ttl_s: float = 120,
                  queue: int | None = None) -> dict[str, Any]:
        """Follow pid and its children (depth generations, ttl_s for ones that join later); queue sets this
        client's queue size (the broker's default otherwise)."""
        args = {"queue": queue} if queue else {}
        return self.call("subscribe", pid=pid, streams=_streams(streams), depth=depth, ttl_s=ttl_s, **args)

    def unsubscribe(self, pid: int) -> dict[str, Any]:
        return self.call("unsubscribe", pid=pid)

    def set_pids(self, pids: list[int], streams: Any = "all", depth: int = 3) -> dict[str, Any]:
        return self.call("set_pids", pids=pids, streams=_streams(streams), depth=depth)

    def get_event(self, timeout: float = 1.0) -> Record | None:
        """Pull the oldest queued event (FIFO), waiting up to timeout; None when there is none."""
        items = self.call("get_event", timeout=timeout, max=1)
        return Record.from_frame(items[0]) if items else None

    def get_events(self, timeout: float = 1.0, max: int = 256) -> list[Record]:  # noqa: A002
        return [Record.from_frame(i) for i in self.call("get_event", timeout=timeout, max=max)]

    def events(self) -> Iterator[Record]:
        """Switch to push mode and iterate events as the broker sends them."""
        self.call("stream")
        while True:
            while self._pushed:
                yield Record.from_frame(self._pushed.pop(0))
            frame = read_frame(self.sock)
            if frame is None:
                return
            if "event" in frame:
                yield Record.from_frame(frame)

    def stats(self) -> dict[str, Any]:
        return self.call("stats")

    def query_image(self, pid: int) -> str:
        return self.call("query_image", pid=pid)["image"]

    def shutdown(self) -> dict[str, Any]:
        return self.call("shutdown")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncClient:
    """The same surface for asyncio: ``await AsyncClient.open()``, ``async for r in c.events()``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._ids = itertools.count(1)
        self._pushed: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, path: str = DEFAULT_SOCKET) -> AsyncClient:
        reader, writer = await asyncio.open_unix_connection(path)
        client = cls(reader, writer)
        await client.call("hello")
        return client

    async def _frame(self) -> dict[str, Any] | None:
        try:
            head = await self.reader.readexactly(_LEN.size)
            (length,) = _LEN.unpack(head)
            if length > MAX_FRAME:
                raise BrokerError("frame_too_large", f"frame of {length} bytes")
            return json.loads(await self.reader.readexactly(length))
        except asyncio.IncompleteReadError:
            return None

    async def call(self, verb: str, **args: Any) -> Any:
        request_id = next(self._ids)
        self.writer.write(encode({"id": request_id, "verb": verb, "args": args}))
        await self.writer.drain()
        while True:
            frame = await self._frame()
            if frame is None:
                raise BrokerError("closed", "the broker closed the connection")
            if "event" in frame:
                self._pushed.append(frame)
            elif frame.get("id") in (request_id, None):
                return _result(frame)

    async def subscribe(self, pid: int, streams: Any = "all", depth: int = 3, ttl_s: float = 120) -> Any:
        return await self.call("subscribe", pid=pid, streams=_streams(streams), depth=depth, ttl_s=ttl_s)

    async def unsubscribe(self, pid: int) -> Any:
        return await self.call("unsubscribe", pid=pid)

    async def set_pids(self, pids: list[int], streams: Any = "all", depth: int = 3) -> Any:
        return await self.call("set_pids", pids=pids, streams=_streams(streams), depth=depth)

    async def get_event(self, timeout: float = 1.0) -> Record | None:
        items = await self.call("get_event", timeout=timeout, max=1)
        return Record.from_frame(items[0]) if items else None

    async def events(self) -> AsyncIterator[Record]:
        await self.call("stream")
        while True:
            while self._pushed:
                yield Record.from_frame(self._pushed.pop(0))
            frame = await self._frame()
            if frame is None:
                return
            if "event" in frame:
                yield Record.from_frame(frame)

    async def stats(self) -> Any:
        return await self.call("stats")

    async def query_image(self, pid: int) -> str:
        return (await self.call("query_image", pid=pid))["image"]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()
