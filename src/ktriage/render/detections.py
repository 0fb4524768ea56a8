"""Detections for people and programs: one JSON object per line, or a table."""

from __future__ import annotations

import json
from typing import Any, TextIO

from ktriage.render.preview import iso_time
from ktriage.render.rows import write_rows

TABLE_COLUMNS = ("time", "sev", "name", "actor", "target", "image", "reason")


def as_record(det: dict[str, Any]) -> dict[str, Any]:
    """The JSONL contract of a detection (name, severity, actor_pid, target_pid, ts, reason, event_ids, technique …)."""
    return {
        "name": det["name"], "severity": det["severity"], "actor_pid": det["actor_pid"],
        "target_pid": det["target_pid"], "ts": det["ts"], "time": iso_time(det["ts"]), "host": det.get("host"),
        "reason": det["reason"], "event_ids": json.loads(det["event_ids"] or "[]"),
        "technique": [t for t in (det.get("technique") or "").split(",") if t], "seed_name": det.get("seed_name"),
        "actor_image": det.get("image"), "target_image": det.get("target_image"), "age_ms": det.get("age_ms"),
        "access_mask": det.get("access_mask"), "evidence": json.loads(det.get("evidence") or "[]"),
    }


def alert_line(det: dict[str, Any]) -> str:
    """One line for a detection as it happens: time, severity, name, who did it to whom, why."""
    actor = f"{det.get('actor_pid') or '-'} ({det.get('image') or '?'})"
    target = f" -> {det['target_pid']} ({det.get('target_image') or '?'})" if det.get("target_pid") else ""
    return f"{iso_time(det['ts'])}  sev {det['severity']}  {det['name']}  {actor}{target}: {det['reason']}"


def write(out: TextIO, fmt: str, detections: list[dict[str, Any]]) -> int:
    if fmt == "jsonl":
        for det in detections:
            out.write(json.dumps(as_record(det)) + "\n")
        return len(detections)
    rows = [(iso_time(d["ts"]), d["severity"], d["name"], d["actor_pid"], d["target_pid"] or "",
             d.get("image") or "", d["reason"]) for d in detections]
    return write_rows(out, "table", TABLE_COLUMNS, rows)
