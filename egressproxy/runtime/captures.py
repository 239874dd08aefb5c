"""The capture pipeline of one `egressproxy run` process: the embedded store and the OTLP export behind one
sink, started before serving and flushed at shutdown (what is still queued after a few seconds is dropped and
counted: a stop never waits on a slow disk or collector)."""

from __future__ import annotations

from dataclasses import dataclass

from egressproxy.capture_metrics import CaptureMetrics
from egressproxy.capture_sink import CaptureSink
from egressproxy.capture_store import STORE_FILE, CaptureStore
from egressproxy.otlp_export import OtlpExport
from egressproxy.runtime.state import GatewayState

__all__ = ["Captures", "start_captures"]


@dataclass
class Captures:
    store: CaptureStore
    export: OtlpExport

    def close(self, timeout: float = 5.0) -> None:
        self.store.close(timeout)
        self.export.close(timeout)


def start_captures(state: GatewayState, *, max_age: float, max_bytes: int) -> Captures:
    """Start the writer and exporter threads and register the capture sink after the metrics sink."""
    metrics = CaptureMetrics(state.metrics.registry)
    store = CaptureStore(state.data_dir / STORE_FILE, metrics, max_age=max_age, max_bytes=max_bytes).start()
    export = OtlpExport(metrics).start()
    state.sinks.register(CaptureSink(lambda: state.snapshot, store, export))
    return Captures(store, export)
