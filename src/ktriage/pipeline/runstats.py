"""A run's per-stage counters, as the rows of the `stats` table: what the kernel
sent and lost, what was decoded, what the rules did, what each queue dropped and
what was stored or forwarded. `record` and `serve` write the same rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ktriage.model.families import KERNEL_FAMILIES

if TYPE_CHECKING:
    from ktriage.sources.linux.live import LiveSource
    from ktriage.store.forwarder import Forwarder
    from ktriage.store.writer import StoreWriter

Row = tuple[str, str, str, int]  # stage, family, counter, value


def source_rows(source: LiveSource, sent: dict[str, int], lost: dict[str, int]) -> list[Row]:
    """The kernel's counters (sent, lost: as read once by the caller), the decoder's and the rules'."""
    decoder = source.decoder
    assert decoder is not None
    rows = [("bpf", f, "sent", sent[f]) for f in KERNEL_FAMILIES]
    rows += [("bpf", f, "lost", lost[f]) for f in KERNEL_FAMILIES]
    rows += [("decode", f, "received", decoder.records[f]) for f in KERNEL_FAMILIES]
    rows += [("decode", f, "events", source.counts[f]) for f in KERNEL_FAMILIES]
    if source.engine is not None:
        rows += [("detect", "", name, value) for name, value in sorted(source.engine.counters.items())]
    rows.append(("detect", "", "delivered", source.counts["detection"]))  # the engine's and integrity's
    rows += [("decode", "", "errors", decoder.errors), ("decode", "", "own", source.own_events)]
    return rows


def sink_rows(writer: StoreWriter, forwarder: Forwarder | None) -> list[Row]:
    """What the store's queue dropped and the store wrote; the forwarder's counters and its queue's drops."""
    rows = [("queue", "", "dropped", writer.sub.dropped),
            ("store", "", "written", writer.written), ("store", "", "failed", writer.failed),
            ("store", "", "unknown_keys", writer.store.unknown_keys)]
    if forwarder:
        rows += forwarder.counters() + [("queue", "forward", "dropped", forwarder.sub.dropped)]
    return rows
