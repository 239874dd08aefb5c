"""`python -m tests.support.slow_sink_gateway run ...`: the real `egressproxy run`, with one more sink that blocks.

The extra sink, registered after the gateway's own (metrics, denial log), blocks the event loop on each finished
request until the file named by `SLOW_SINK_GATE` exists (at most `SLOW_SINK_LIMIT` seconds), after writing a line
to `SLOW_SINK_ENTERED`. A test holding the gate shut sees whether a client gets its response while a request's
finishing is stuck: it must (egressproxy/deferred_work.py), since finishing runs after the response is written.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from egressproxy.flowrecord import FinishedRequest
from egressproxy.runtime.state import GatewayState
from egressproxy.sinks import Sink


class GatedSink(Sink):
    name = "gated"

    def __init__(self, gate: Path, entered: Path, limit: float) -> None:
        self.gate, self.entered, self.limit = gate, entered, limit

    def request_finished(self, record: FinishedRequest) -> None:
        with self.entered.open("a") as f:
            f.write(f"{record.url}\n")
        deadline = time.monotonic() + self.limit
        while not self.gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # blocks the loop on purpose: the stuck finishing under test


def _install() -> None:
    gate, entered = Path(os.environ["SLOW_SINK_GATE"]), Path(os.environ["SLOW_SINK_ENTERED"])
    limit = float(os.environ.get("SLOW_SINK_LIMIT", "15"))
    post_init = GatewayState.__post_init__

    def with_gated_sink(self: GatewayState) -> None:
        post_init(self)
        self.sinks.register(GatedSink(gate, entered, limit))

    GatewayState.__post_init__ = with_gated_sink  # type: ignore[method-assign]


if __name__ == "__main__":
    _install()
    from egressproxy.cli import main

    sys.exit(main(sys.argv[1:]))
