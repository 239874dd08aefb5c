"""Counters of the capture store and the OTLP export, on the gateway's registry.

Both are best effort by design: a record that cannot be kept is dropped and counted here, never waited for.
Labels are fixed words (`sink` = store | otlp, `reason` below), never hosts, paths or error texts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = ["CaptureMetrics", "DROP_REASONS"]

# queue-full: the writer or exporter fell behind and its bounded queue was full; store-error: SQLite failed
# (full disk, read-only directory, a lock held past the busy timeout); export-failed: the collector refused or
# did not answer; closed: the process stopped before the record was written.
DROP_REASONS = ("queue-full", "store-error", "export-failed", "closed")


class CaptureMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.written = Counter(
            "egress_capture_records",
            "Capture records written to the embedded store (sink=store) or exported over OTLP (sink=otlp)",
            ("sink",),
            registry=registry,
        )
        self.dropped = Counter(
            "egress_capture_drops",
            "Capture records dropped instead of slowing traffic, by sink and reason",
            ("sink", "reason"),
            registry=registry,
        )

    def wrote(self, sink: str, count: int = 1) -> None:
        self.written.labels(sink).inc(count)

    def drop(self, sink: str, reason: str, count: int = 1) -> None:
        self.dropped.labels(sink, reason).inc(count)
