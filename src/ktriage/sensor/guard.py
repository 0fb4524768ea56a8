"""The sensor's kernel state read back and compared with what user space set up.

Checked on every integrity check (detect/tamper.py): ``kt_cfg`` against the user-space copy of
the last configuration, every map sealed frozen still frozen, every link still holding its
program, and the pinned signal marks still the map this sensor writes. Each finding is one line
naming what differs.
"""

from __future__ import annotations

import os

from ktriage.errors import BpfError
from ktriage.sensor import layouts, sigmarks
from ktriage.sensor.libbpf import fdinfo, open_pinned
from ktriage.sensor.sensor import Sensor

_CFG_NAMES = [f.name for f in layouts.CONFIG]


def cfg_differences(expected: bytes, found: bytes) -> list[str]:
    """'field: expected X, found Y' for every field of kt_cfg that changed."""
    if len(found) != len(expected):
        return [f"kt_cfg unreadable ({len(found)} bytes)"]
    want, got = layouts.CONFIG_STRUCT.unpack(expected), layouts.CONFIG_STRUCT.unpack(found)
    return [f"kt_cfg.{name}: expected {a}, found {b}" for name, a, b in zip(_CFG_NAMES, want, got) if a != b]


class StateGuard:
    def __init__(self, sensor: Sensor) -> None:
        assert sensor.obj is not None
        self.sensor = sensor
        self.marks_map_id = int(fdinfo(sensor.obj.map("kt_sigmarks").fd)["map_id"])

    def problems(self) -> list[str]:
        return self._config() + self._frozen() + self._links() + self._pin()

    def _config(self) -> list[str]:
        return cfg_differences(self.sensor.expected_cfg, self.sensor.read_cfg())

    def _frozen(self) -> list[str]:
        assert self.sensor.obj is not None
        return [f"map {name} is no longer frozen" for name in self.sensor.frozen
                if fdinfo(self.sensor.obj.map(name).fd).get("frozen") != "1"]

    def _links(self) -> list[str]:
        assert self.sensor.obj is not None
        out = []
        for name, fd in self.sensor.obj.link_fds().items():
            info = fdinfo(fd)
            if info.get("prog_id", "0") == "0":
                out.append(f"program {name} detached (link {info.get('link_id', '?')})")
        return out

    def _pin(self) -> list[str]:
        path = sigmarks.pin_path()
        try:
            fd = open_pinned(path)
        except BpfError as exc:
            return [f"pinned signal marks {path} gone ({exc})"]
        try:
            found = int(fdinfo(fd).get("map_id", "0"))
        finally:
            os.close(fd)
        if found != self.marks_map_id:
            return [f"pinned signal marks {path} replaced (map {found}, the sensor writes map {self.marks_map_id})"]
        return []
