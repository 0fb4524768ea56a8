"""`ktriage watch`: live rendering of a process (and its children), or of a
command launched under watch, in the seed's preview layout or as JSON lines.

A launched command is held before exec until the sensor is attached and its
pid is in the kernel's target set, so nothing it does is missed. Watching ends
when the root process ends (or on Ctrl-C / --duration).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from ktriage.errors import UsageError
from ktriage.model.event import event_id
from ktriage.pipeline.bus import Renderer
from ktriage.pipeline.pipeline import Pipeline
from ktriage.pipeline.stop import stop_on_signals
from ktriage.render.preview import Preview
from ktriage.sensor.sensor import ALL_FAMILIES, SensorOptions
from ktriage.sources.linux.live import POLL_MS, check_pids, live_pipeline, require_root


@dataclass
class WatchOptions:
    pids: list[int] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    families: frozenset[str] = ALL_FAMILIES
    max_depth: int = 0xFFFFFFFF
    fmt: str = "text"
    colour: bool = False
    duration: float | None = None


class Launch:
    """A child that runs argv once released."""

    def __init__(self, argv: list[str], stdout: int | None = None) -> None:
        exe = shutil.which(argv[0])
        if exe is None:
            raise UsageError(f"cannot run {argv[0]!r}: command not found")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: wait for the go, then become the command
            os.close(w)
            if stdout is not None:
                os.dup2(stdout, 1)
            os.read(r, 1)
            try:
                os.execv(exe, argv)
            finally:
                os._exit(127)
        os.close(r)
        if stdout is not None:
            os.close(stdout)
        self.pid, self._go, self.status = pid, w, None

    def release(self) -> None:
        os.write(self._go, b"x")
        os.close(self._go)
        self._go = -1

    def finished(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status is not None

    def abandon(self) -> None:
        """Kill a child that was never released or did not finish."""
        if self._go >= 0:
            os.close(self._go)
            self._go = -1
        if self.status is None:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
            self.status = -9


class Watcher:
    def __init__(self, options: WatchOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.options = options
        self.out = out
        self.err = err
        self.preview = Preview(colour=options.colour)

    def run(self) -> int:
        require_root("watching")
        o = self.options
        if bool(o.pids) == bool(o.command):
            raise UsageError("watch needs either --pid PID… or -- COMMAND [ARGS…]")
        launch = Launch(o.command) if o.command else None
        try:
            pids = {launch.pid: 0} if launch else check_pids(o.pids)
            live = live_pipeline(SensorOptions(pids=pids, families=o.families, max_depth=o.max_depth))
            live.pipeline.bus.attach(Renderer(self._write))
            try:
                live.pipeline.start()
                if launch:
                    launch.release()
                self._loop(live.pipeline, launch, next(iter(pids)) if not launch else launch.pid)
            finally:
                live.source.close()
        finally:
            if launch:
                launch.abandon()
        return launch.status or 0 if launch else 0

    def _loop(self, pipeline: Pipeline, launch: Launch | None, root: int) -> None:
        print(f"ktriage: watching pid {root} and its children (Ctrl-C to stop)", file=self.err, flush=True)
        deadline = time.monotonic() + self.options.duration if self.options.duration else None
        with stop_on_signals() as stop:
            while not stop.requested:
                pipeline.step(POLL_MS)
                gone = launch.finished() if launch else not os.path.exists(f"/proc/{root}")
                if gone or (deadline is not None and time.monotonic() >= deadline):
                    break
        pipeline.step(100)  # the root's last events
        pipeline.step(0)

    def _write(self, events: list[dict]) -> None:
        if self.options.fmt == "jsonl":
            for ev in events:
                self.out.write(json.dumps(ev) + "\n")
        else:  # detections become Alert sections under the event that completed them
            alerts: dict[str, list[dict]] = {}
            for det in (e for e in events if e["family"] == "detection"):
                alerts.setdefault(det["trigger_id"], []).append(det)
            for ev in events:
                if ev["family"] != "detection":
                    self.out.write(self.preview.render(ev, alerts.get(event_id(ev), [])) + "\n")
        if events:
            self.out.flush()


def main(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    options = WatchOptions(pids=args.pid, command=command, max_depth=args.depth, fmt=args.format, colour=colour,
                           duration=args.duration)
    if args.streams is not None:
        options.families = args.streams
    return Watcher(options).run()
