"""The correlation engine: events in, detection events out.

Time is the events' own ``ts``, never the wall clock, so the same stream gives
the same detections live and replayed. All state is bounded: per rule at most
``capacity`` keys (least recently used evicted, counted), partial sequences and
mark chains expire with their window.

A detection is an event of family ``detection``; ``event_ids`` lists the events
that satisfied the rule and ``evidence`` which step or mark each one was.
"""

from __future__ import annotations

import copy
import json
import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ktriage.detect.index import RuleIndex
from ktriage.detect.rules import Level, Rule, Step
from ktriage.model.event import Event, event_id

log = logging.getLogger(__name__)
Key = tuple[Any, ...]
SUPPRESS_WINDOW_NS = 30_000_000_000



def _key(ev: Event, step: Step) -> Key | None:
    key = tuple(ev.get(f) for f in step.by)
    return None if key[0] is None else key


class _Lru(OrderedDict):
    def __init__(self, capacity: int, counters: Counter[str]) -> None:
        super().__init__()
        self.capacity = capacity
        self.counters = counters

    def touch(self, key: Key, default: Any) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        self[key] = default
        if len(self) > self.capacity:
            self.popitem(last=False)
            self.counters["evicted"] += 1
        return default


@dataclass
class _Chain:
    first_ts: int
    marks: dict[str, Event] = field(default_factory=dict)
    fired: dict[str, int] = field(default_factory=dict)


class Engine:
    def __init__(self, rules: list[Rule], capacity: int = 16384) -> None:
        self.rules = sorted(rules, key=lambda r: -r.severity)  # stronger first: suppression sees them fire
        self._index = RuleIndex(self.rules)
        self._reset(capacity)

    def fresh(self) -> Engine:
        """An engine with the same rules and no state (cheaper than a new one: the index is shared)."""
        other = copy.copy(self)
        other._reset(self.capacity)
        return other

    def _reset(self, capacity: int) -> None:
        self.capacity = capacity
        self.counters: Counter[str] = Counter()
        self.seq = 0
        self._state: dict[str, _Lru] = {r.name: _Lru(capacity, self.counters) for r in self.rules}
        self._fired = _Lru(capacity, self.counters)  # (name, actor, target) -> ts
        self._kinds = {"match": self._match, "sequence": self._sequence, "marks": self._marks}

    def process_many(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        for ev in events:
            out.extend(self.process(ev))
        return out

    def process(self, ev: Event) -> list[Event]:
        out: list[Event] = []
        for rule in self._index.rules_for(ev):
            try:
                out.extend(self._kinds[rule.kind](rule, ev))
            except (TypeError, ValueError, KeyError) as exc:
                # a rule that cannot evaluate this event: counted, never fatal to the live pipeline
                self.counters["rule_errors"] += 1
                log.warning("rule %s failed on %s: %r", rule.name, event_id(ev), exc)
        return out

    # -- kinds -----------------------------------------------------------------

    def _match(self, rule: Rule, ev: Event) -> list[Event]:
        step = rule.steps[0]
        if not step.where(ev):
            return []
        key = _key(ev, step)
        if key is None:
            return []
        return self._fire(rule, rule.name, rule.severity, rule.reason, key, ev, [("match", ev)])

    def _sequence(self, rule: Rule, ev: Event) -> list[Event]:
        partials = self._state[rule.name]  # key -> {stage: [events]}
        window = rule.window_ms * 1_000_000
        out: list[Event] = []
        if rule.until is not None and rule.until.where(ev):
            key = _key(ev, rule.until)
            if key in partials:  # the chain is broken (e.g. the process exec'd): start over
                del partials[key]
        for stage in range(len(rule.steps) - 1, 0, -1) if partials else ():
            step = rule.steps[stage]
            if not step.where(ev):
                continue
            key = _key(ev, step)
            if key is None or key not in partials:
                continue
            chain = partials[key].get(stage)
            if chain is None:
                continue
            if ev["ts"] - chain[0]["ts"] > window:
                del partials[key][stage]
                self.counters["expired"] += 1
                continue
            if ev["ts"] - chain[-1]["ts"] < step.after_ms * 1_000_000:
                continue  # too soon after the previous step to be its sequel: the partial chain waits
            del partials[key][stage]
            chain = chain + [ev]
            if stage + 1 == len(rule.steps):
                evidence = [(s.name, e) for s, e in zip(rule.steps, chain)]
                out.extend(self._fire(rule, rule.name, rule.severity, rule.reason, key, ev, evidence))
            else:
                partials[key][stage + 1] = chain
            break
        first = rule.steps[0]
        if first.where(ev):
            key = _key(ev, first)
            if key is not None:
                partials.touch(key, {})[1] = [ev]
        return out

    def _marks(self, rule: Rule, ev: Event) -> list[Event]:
        chains = self._state[rule.name]
        window = rule.window_ms * 1_000_000
        out: list[Event] = []
        for step in rule.steps:
            if not step.where(ev):
                continue
            key = _key(ev, step)
            if key is None:
                continue
            chain = chains.touch(key, None) or _Chain(ev["ts"])
            if ev["ts"] - chain.first_ts > window:  # slide: forget the old marks first, then add this one
                chain = _Chain(ev["ts"])
                self.counters["expired"] += 1
            chain.marks[step.name] = ev
            chains[key] = chain
            out.extend(self._evaluate(rule, chain, key, ev))
        return out

    def _evaluate(self, rule: Rule, chain: _Chain, key: Key, ev: Event) -> list[Event]:
        present = set(chain.marks)
        for level in rule.levels:  # strongest first; one detection per evaluation
            if not level.satisfied(present):
                continue
            last = chain.fired.get(level.name)
            if last is not None and ev["ts"] - last < rule.cooldown_ms * 1_000_000:
                self.counters["cooldown"] += 1
                return []
            chain.fired[level.name] = ev["ts"]
            evidence = [(m, e) for m, e in sorted(chain.marks.items(), key=lambda kv: kv[1]["ts"])]
            return self._fire(rule, level.name, level.severity, level.reason, key, ev, evidence, level)
        return []

    # -- output ----------------------------------------------------------------

    def _suppressed(self, rule: Rule, name: str, key: Key, ts: int) -> bool:
        for stronger in rule.suppressed_by:
            when = self._fired.get((stronger, *key))
            if when is not None and ts - when <= SUPPRESS_WINDOW_NS:
                return True
        return False

    def _fire(self, rule: Rule, name: str, severity: int, reason: str, key: Key, ev: Event,
              evidence: list[tuple[str, Event]], level: Level | None = None) -> list[Event]:
        if rule.unless is not None and rule.unless(ev):
            self.counters["excluded"] += 1
            return []
        if self._suppressed(rule, name, key, ev["ts"]):
            self.counters["suppressed"] += 1
            return []
        if rule.kind != "marks" and rule.cooldown_ms:
            last = self._fired.get((name, *key))
            if last is not None and ev["ts"] - last < rule.cooldown_ms * 1_000_000:
                self.counters["cooldown"] += 1
                return []
        self._fired.touch((name, *key), ev["ts"])
        self._fired[(name, *key)] = ev["ts"]
        self.counters["fired"] += 1
        self.seq += 1
        return [self._detection(rule, name, severity, reason, key, ev, evidence)]

    def _detection(self, rule: Rule, name: str, severity: int, reason: str, key: Key, ev: Event,
                   evidence: list[tuple[str, Event]]) -> Event:
        events = [e for _, e in evidence]
        target = key[1] if len(key) > 1 else None
        mask = 0
        for e in events:
            mask |= e.get("rights_mask") or 0
        return {
            "family": "detection", "ts": ev["ts"], "host": ev.get("host"), "source": f"detect/{ev.get('source')}",
            "seq": self.seq, "pid": key[0], "tid": ev.get("tid") if ev.get("pid") == key[0] else None,
            "ppid": ev.get("ppid") if ev.get("pid") == key[0] else None, "uid": ev.get("uid"),
            "comm": ev.get("comm") if ev.get("pid") == key[0] else None,
            "image": ev.get("image") if ev.get("pid") == key[0] else None,
            "name": name, "severity": severity, "actor_pid": key[0], "target_pid": target,
            "target_image": next((e.get("target_image") for e in events if e.get("target_image")), None),
            "flags": len(evidence), "access_mask": mask,
            "age_ms": (ev["ts"] - min(e["ts"] for e in events)) // 1_000_000, "reason": reason,
            "technique": ",".join(rule.technique), "seed_name": rule.seed, "rule": rule.name,
            "event_ids": json.dumps([event_id(e) for e in events]),
            "evidence": json.dumps([[label, event_id(e)] for label, e in evidence]),
            "trigger_id": event_id(ev),
        }
