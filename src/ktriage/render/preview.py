"""The seed's preview layout for events (research/seeds.md A13.1), on Linux:
a blank line, a ``[FAMILY] …`` title, then labelled sections (label padded to
six characters) — Meta, Actor, Origin, Status, Deep, Stack — as they apply.
Colour only when asked (a terminal)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime, timezone

from ktriage.model.event import Event

# origin class -> the seed's handle classification
ORIGIN_VERDICT = {"libc": "LEGITIMATE-SYSCALL", "ldso": "LEGITIMATE-SYSCALL", "vdso": "LEGITIMATE-SYSCALL",
                  "exe": "STATIC-SYSCALL", "file": "DIRECT-SYSCALL-SUSPECT", "anon": "DIRECT-SYSCALL-SUSPECT",
                  "none": "UNKNOWN-ORIGIN"}
_COLOURS = {"access": "35", "memory": "33", "module": "31", "api": "36", "signal": "34", "process": "32",
            "thread": "32", "image": "37", "file": "37", "network": "34", "detection": "1;31"}
SUSPECT = "1;31"


def iso_time(ns: int) -> str:
    t = datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{ns % 1_000_000_000:09d}Z"


def _hex(value: int | None) -> str:
    return f"{(value or 0) & 0xFFFFFFFFFFFFFFFF:016X}"


def _result(value: int | None) -> str:
    if not value or value >= 0:
        return f"{value or 0} (success)"
    return f"{value} ({os.strerror(-value)})"


class Preview:
    def __init__(self, colour: bool = False) -> None:
        self.colour = colour
        self.last_ts: int | None = None
        self._titles: dict[str, Callable[[Event], str]] = {
            "access": self._access, "memory": self._memory, "module": self._module, "api": self._api,
            "signal": self._signal, "process": self._process, "thread": self._thread, "image": self._image,
            "file": self._file, "network": self._network,
        }

    def title(self, ev: Event) -> str:
        """The first line of an event's preview: what happened, in one line."""
        fam = ev["family"]
        if fam == "detection":
            return f"[DETECTION] {ev['name']} severity={ev['severity']} actor={ev['actor_pid']} target={ev['target_pid']}"
        return self._titles.get(fam, lambda e: f"[{fam.upper()}]")(ev).splitlines()[0]

    def _paint(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.colour else text

    def render(self, ev: Event, alerts: list[Event] = ()) -> str:  # type: ignore[assignment]
        fam = ev["family"]
        title = self._titles.get(fam, lambda e: f"[{fam.upper()}]")(ev)
        suspect = ORIGIN_VERDICT.get(ev.get("origin_class") or "") == "DIRECT-SYSCALL-SUSPECT"
        lines = ["", self._paint(SUSPECT if suspect else _COLOURS.get(fam, "0"), title), self._meta(ev)]
        lines += self._actor(ev)
        if ev.get("origin_class"):
            lines += self._origin(ev)
        if "result" in ev:
            lines.append(f"Status result={_result(ev['result'])}")
        if ev.get("sample"):
            lines += self._deep(ev)
        if ev.get("stack"):
            lines += self._stack(ev)
        if suspect:
            lines.append(self._paint(SUSPECT, "Alert  direct-syscall-suspect classification observed"))
        for det in alerts:
            lines.append(self._paint(SUSPECT if det["severity"] >= 5 else "33",
                                     f"Alert  {det['name']} severity={det['severity']} "
                                     f"actor={det['actor_pid']} target={det['target_pid'] or '-'}: {det['reason']}"))
            lines.append(f"       events={', '.join(json.loads(det['event_ids']))} technique={det['technique']}")
        return "\n".join(lines)

    def _meta(self, ev: Event) -> str:
        dt = "" if self.last_ts is None else f" dt=+{(ev['ts'] - self.last_ts) / 1e9:.6f}s"
        self.last_ts = ev["ts"]
        return (f"Meta   event={ev['family']} pid={ev['pid']} tid={ev['tid']} ppid={ev['ppid']} uid={ev['uid']} "
                f"seq={ev['seq']} ts={iso_time(ev['ts'])}{dt}")

    @staticmethod
    def _actor(ev: Event) -> list[str]:
        unknown = "<pid:{} image-unknown>"
        lines = [f"Actor  callerImage={ev.get('image') or unknown.format(ev['pid'])}"]
        if ev.get("target_pid") is not None:
            lines.append(f"       targetImage={ev.get('target_image') or unknown.format(ev['target_pid'])}")
        return lines

    @staticmethod
    def _origin(ev: Event) -> list[str]:
        cls = ev["origin_class"]
        return [f"Origin addr=0x{_hex(ev['origin_ip'])} ({ev.get('origin_module') or '?'})",
                f"       class={cls} path={ev.get('origin_path') or '-'}",
                f"       protect={ev.get('origin_prot')} exec={int('x' in (ev.get('origin_prot') or ''))} "
                f"fromLibc={int(cls in ('libc', 'ldso', 'vdso'))} fromExe={int(cls == 'exe')}"]

    @staticmethod
    def _deep(ev: Event) -> list[str]:
        sample = bytes.fromhex(ev["sample"])
        opcodes = " ".join(f"{b:02X}" for b in sample[:16]) + (" ..." if len(sample) > 16 else "")
        return [f"Deep   region=0x{_hex(ev['origin_start'])}-0x{_hex(ev['origin_end'])} "
                f"protect={ev.get('origin_prot')} backing=anonymous",
                f"       sampleSize={len(sample)} entropy={ev.get('sample_entropy') or 0:.3f} opcodes={opcodes}"]

    @staticmethod
    def _stack(ev: Event) -> list[str]:
        frames = json.loads(ev["stack"])
        lines = [f"Stack  frames={len(frames)}"]
        lines += [f"       #{i} 0x{_hex(ip)} ({sym or 'unresolved'})" for i, (ip, sym) in enumerate(frames)]
        return lines

    @staticmethod
    def _verdict(ev: Event) -> str:
        return ORIGIN_VERDICT.get(ev.get("origin_class") or "none", "UNKNOWN-ORIGIN")

    def _access(self, ev: Event) -> str:
        op = ev["request"] or ev["op"]
        return (f"[ACCESS] {self._verdict(ev)}  {_hex(ev['pid'])} -> {_hex(ev['target_pid'])}  "
                f"rights=0x{ev['rights_mask']:08X} ({ev['rights'] or '<none>'})  op={op}")

    def _memory(self, ev: Event) -> str:
        if ev["op"] == "memfd_create":
            return f"[MEMORY] {self._verdict(ev)}  memfd_create name={ev['name']} fd={ev['fd']}"
        prot = f"{ev['old_prot']}->{ev['prot']}" if ev.get("old_prot") else ev["prot"]
        backing = "anon" if ev.get("anon") else (ev.get("name") or "file")
        return (f"[MEMORY] {self._verdict(ev)}  {ev['op']} addr=0x{_hex(ev['addr'])} len=0x{ev['length']:X} "
                f"prot={prot} backing={backing}")

    def _module(self, ev: Event) -> str:
        what = ev.get("name") or ev.get("path") or ""
        return f"[MODULE] {self._verdict(ev)}  {ev['op']} {what}"

    def _api(self, ev: Event) -> str:
        return (f"[API] {self._verdict(ev)}  {ev['op']} uid {ev['old_uid']}->{ev['new_uid']} "
                f"euid {ev['old_euid']}->{ev['new_euid']} caps {ev['caps_before']}->{ev['caps_after']}")

    @staticmethod
    def _signal(ev: Event) -> str:
        return (f"[SIGNAL] {_hex(ev['pid'])} -> {_hex(ev['target_pid'])}  {ev['signal_name']}({ev['signal']}) "
                f"via {ev['op']}")

    @staticmethod
    def _process(ev: Event) -> str:
        head = f"[PROCESS] {ev['action'].upper()} pid={_hex(ev['pid'])} parent={_hex(ev['ppid'])}"
        if ev["action"] == "exec":
            return f"{head}\nImage  {ev['path']}\nCmd    {ev['cmdline'] or '<none>'}\nCwd    {ev['cwd']}"
        if ev["action"] == "fork":
            return f"{head} child={_hex(ev['child_pid'])}"
        status = f"signal={ev['exit_signal']}" if ev.get("exit_signal") else f"status={ev.get('exit_status')}"
        return f"{head} {status}"

    @staticmethod
    def _thread(ev: Event) -> str:
        return f"[THREAD] pid={_hex(ev['pid'])} tid={_hex(ev['new_tid'])} creator={_hex(ev['tid'])}"

    @staticmethod
    def _image(ev: Event) -> str:
        return (f"[IMAGE] pid={_hex(ev['pid'])} base=0x{_hex(ev['start'])} size=0x{ev['end'] - ev['start']:X} "
                f"how={ev['how']}\nImage  path={ev['path']}")

    @staticmethod
    def _file(ev: Event) -> str:
        to = f" -> {ev['path2']}" if ev.get("path2") else ""
        return f"[FILE] {ev['op'].upper()} {ev['path']}{to}"

    @staticmethod
    def _network(ev: Event) -> str:
        if ev["op"] == "socket":
            return f"[NETWORK] SOCKET {ev['af']} {ev['proto']}"
        remote = f" -> {ev['raddr']}:{ev['rport']}" if ev.get("raddr") else ""
        return f"[NETWORK] {ev['op'].upper()} {ev['proto']} {ev['laddr']}:{ev['lport']}{remote} {ev.get('state') or ''}"
