"""`ktriage selftest`: the sensor and the detections proven on this host with real attacks."""

from __future__ import annotations

import argparse

from ktriage.selftest.suite import Suite


def main(args: argparse.Namespace) -> int:
    return Suite().run()
