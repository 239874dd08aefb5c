"""egressproxy/engine/guard.py: a hook that raises denies what it was deciding, and the error is counted.

mitmproxy's hooks fail open (an exception is logged and the flow carries on); `fail_closed` reverses that. Each
case runs a failing hook through mitmproxy's own addon manager (taddons), as the proxy would call it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from mitmproxy import exceptions, http
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import taddons, tflow

from egressproxy.engine.guard import INTERNAL_ERROR, fail_closed
from egressproxy.runtime.state import GatewayState
from tests.support.addon_state import counter


class Broken:
    """An addon whose every hook fails the way a bug would."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        raise KeyError("bug")

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        raise ValueError("async bug")

    @fail_closed
    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        raise RuntimeError("bug")

    @fail_closed
    def next_layer(self, flow: http.HTTPFlow) -> None:
        raise exceptions.AddonHalt()


@pytest.fixture
def addon(tmp_path: Path) -> Broken:
    return Broken(GatewayState(tmp_path))


def _hook_errors(addon: Broken, hook: str) -> float:
    return counter(addon.state, "egress_hook_errors_total", addon="Broken", hook=hook)


def test_a_failing_request_hook_answers_403_internal_error_and_is_counted(addon) -> None:
    flow = tflow.tflow()
    with taddons.context(addon) as tctx:
        tctx.master.addons.invoke_addon_sync(addon, HttpRequestHook(flow))  # as the proxy core calls it
    assert flow.response is not None and flow.response.status_code == 403
    assert flow.response.headers["x-egress-denied"] == "internal-error"
    assert json.loads(flow.response.content or b"")["reason"] == "internal-error"
    assert _hook_errors(addon, "request") == 1


def test_an_async_hook_fails_closed_too(addon) -> None:
    flow = tflow.tflow()
    with taddons.context(addon):
        asyncio.run(addon.requestheaders(flow))
    assert flow.response is not None and flow.response.headers["x-egress-denied"] == "internal-error"
    assert _hook_errors(addon, "requestheaders") == 1


def test_a_flow_whose_response_started_is_killed_instead(addon) -> None:
    flow = tflow.tflow(resp=True)
    with taddons.context(addon):
        addon.request(flow)
    assert flow.error is not None and not flow.live
    assert flow.response is not None and flow.response.status_code == 200  # the started answer is not rewritten


def test_a_failing_connection_hook_denies_the_connection_and_refuses_the_dial(addon) -> None:
    data = server_hooks.ServerConnectionHookData(server=tflow.tserver_conn(), client=tflow.tclient_conn())
    with taddons.context(addon):
        addon.server_connect(data)
    assert addon.state.connection(data.client.id).verdict == INTERNAL_ERROR
    assert data.server.error == "denied: internal error in the gateway"
    assert _hook_errors(addon, "server_connect") == 1


def test_addon_halt_is_not_a_failure(addon) -> None:
    with taddons.context(addon), pytest.raises(exceptions.AddonHalt):
        addon.next_layer(tflow.tflow())
    assert _hook_errors(addon, "next_layer") == 0
