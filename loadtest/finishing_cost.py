"""What the client waits for at a request's end: `FlowMetrics.response` on the hook, finishing inline vs deferred.

    python loadtest/finishing_cost.py

mitmproxy writes the response only after the `response` hook returned. Before issue 16's change the hook built
the finished record and ran every sink; now it defers that (egressproxy/deferred_work.py). This times the hook
itself, per request, over 3,000 test flows with the gateway's default sinks (metrics, denial log), inline (no
running loop: the work runs at once, as before) and deferred (in a loop, one turn per request). In-process and
a few seconds long; alternating rounds, as the other figures.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from mitmproxy import http
from mitmproxy.test import tflow, tutils

from addons.flow_metrics import FlowMetrics
from egressproxy.engine.answers import flow_record
from egressproxy.flowrecord import Identity, Verdict
from egressproxy.runtime.state import GatewayState

N = 3000


def _flows() -> list[http.HTTPFlow]:
    out = []
    for _ in range(N):
        flow = tflow.tflow(resp=tutils.tresp(status_code=200))
        record = flow_record(flow)
        record.verdict, record.identity = Verdict.allow("route"), Identity("ns", "sa")
        record.gateway, record.listener, record.route = "default/eg", "https", "default/api"
        out.append(flow)
    return out


def _state() -> GatewayState:
    state = GatewayState(Path(tempfile.mkdtemp()))
    state.flow_traces = False  # as `egressproxy run`
    return state


def inline_us() -> float:
    addon, flows = FlowMetrics(_state()), _flows()
    started = time.perf_counter()
    for flow in flows:
        addon.response(flow)
    return (time.perf_counter() - started) / N * 1e6


async def deferred_us() -> float:
    addon, flows = FlowMetrics(_state()), _flows()
    on_hook = 0.0
    for flow in flows:
        started = time.perf_counter()
        addon.response(flow)
        on_hook += time.perf_counter() - started
        await asyncio.sleep(0)  # the next turn: the deferred finishing runs here, not timed
    return on_hook / N * 1e6


def main() -> None:
    for round_ in range(1, 4):
        inline, deferred = inline_us(), asyncio.run(deferred_us())
        print(f"round {round_}: on the response hook, inline {inline:.1f} us/request, deferred {deferred:.1f} us/request")


if __name__ == "__main__":
    main()
