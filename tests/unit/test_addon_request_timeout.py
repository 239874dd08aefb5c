"""addons/request_timeout.py: each request gets a timer of its rule's timeout, else the gateway's requestTimeout.

The timer's delay is read from the event loop (no waiting for it to fire); its expiry is driven directly, as the
loop would call it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from addons.request_timeout import RequestTimeout
from egressproxy.engine.answers import flow_record
from tests.support.addon_state import compile_snapshot, counter, state_for

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  requestTimeout: 30s
  listeners:
  - {name: http, protocol: HTTP}
"""


@pytest.fixture(scope="module")
def snapshot():
    return compile_snapshot(CONFIG)


def _delay_of(addon: RequestTimeout, flow: http.HTTPFlow, rule_timeout: float | None = None) -> float | None:
    """Run `requestheaders` on a loop and return the armed timer's delay in seconds (None: no timer)."""
    flow_record(flow).request_timeout = rule_timeout

    async def arm() -> float | None:
        loop = asyncio.get_running_loop()
        with taddons.context(addon):
            addon.requestheaders(flow)
        handle = addon.timers.get(flow.id)
        if handle is None:
            return None
        delay = handle.when() - loop.time()
        handle.cancel()
        return delay

    return asyncio.run(arm())


def test_the_gateways_request_timeout_applies(snapshot, tmp_path: Path) -> None:
    delay = _delay_of(RequestTimeout(state_for(snapshot, tmp_path)), tflow.tflow())
    assert delay is not None and 29 < delay <= 30


def test_a_rules_timeout_overrides_the_gateways(snapshot, tmp_path: Path) -> None:
    delay = _delay_of(RequestTimeout(state_for(snapshot, tmp_path)), tflow.tflow(), rule_timeout=2.0)
    assert delay is not None and 1 < delay <= 2


@pytest.mark.parametrize("case", ["zero-timeout", "answered", "no-config"])
def test_no_timer_when_nothing_waits_upstream(snapshot, tmp_path: Path, case: str) -> None:
    flow = tflow.tflow(resp=case == "answered")
    state = state_for(None if case == "no-config" else snapshot, tmp_path)
    assert _delay_of(RequestTimeout(state), flow, rule_timeout=0.0 if case == "zero-timeout" else None) is None


def test_a_response_or_an_error_cancels_the_timer(snapshot, tmp_path: Path) -> None:
    addon = RequestTimeout(state_for(snapshot, tmp_path))

    async def run() -> list[bool]:
        cancelled = []
        for hook in (addon.response, addon.error):
            flow = tflow.tflow()
            with taddons.context(addon):
                addon.requestheaders(flow)
            handle = addon.timers[flow.id]
            hook(flow)
            cancelled.append(handle.cancelled() and flow.id not in addon.timers)
        return cancelled

    assert asyncio.run(run()) == [True, True]


def test_expiry_before_the_response_is_an_upstream_timeout_and_ends_the_flow(snapshot, tmp_path: Path) -> None:
    state = state_for(snapshot, tmp_path)
    addon = RequestTimeout(state)
    flow = tflow.tflow()
    with taddons.context(addon):
        addon._expire(flow)
    assert flow_record(flow).error == "upstream-timeout"  # the gateway-errors answer turns this into a 504
    assert counter(state, "egress_upstream_errors_total", reason="upstream-timeout") == 1
    assert flow.error is not None and not flow.live  # no upstream task to cancel here: the flow is killed


def test_expiry_after_the_response_finished_changes_nothing(snapshot, tmp_path: Path) -> None:
    state = state_for(snapshot, tmp_path)
    addon = RequestTimeout(state)
    flow = tflow.tflow(resp=True)
    with taddons.context(addon):
        addon._expire(flow)
    assert flow_record(flow).error is None and flow.live
    assert counter(state, "egress_upstream_errors_total", reason="upstream-timeout") == 0


def _backend_delay(addon: RequestTimeout, flow: http.HTTPFlow) -> float | None:
    async def arm() -> float | None:
        loop = asyncio.get_running_loop()
        with taddons.context(addon):
            addon.request(flow)
        handle = addon.backend_timers.get(flow.id)
        if handle is None:
            return None
        delay = handle.when() - loop.time()
        handle.cancel()
        return delay

    return asyncio.run(arm())


def test_backend_request_bounds_a_direct_request_from_its_body(snapshot, tmp_path: Path) -> None:
    flow = tflow.tflow()
    flow_record(flow).attempt_timeout = 1.5
    delay = _backend_delay(RequestTimeout(state_for(snapshot, tmp_path)), flow)
    assert delay is not None and 1 < delay <= 1.5


def test_a_walked_request_gets_backend_request_per_attempt_in_the_hop_not_here(snapshot, tmp_path: Path) -> None:
    flow = tflow.tflow()
    record = flow_record(flow)
    record.attempt_timeout, record.hop = 1.5, "ticket"
    assert _backend_delay(RequestTimeout(state_for(snapshot, tmp_path)), flow) is None
    assert _backend_delay(RequestTimeout(state_for(snapshot, tmp_path)), tflow.tflow()) is None
