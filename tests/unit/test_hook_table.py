"""egressproxy/runtime/hook_table.py: the gateway's addons as one chain entry behave as they did as many.

Every case dispatches through mitmproxy's own AddonManager (taddons), as the proxy core would: the order of
the addons' methods, sync and async, the isolation of a failing addon, and what must still stop the chain.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mitmproxy import exceptions, hooks, http
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHook
from mitmproxy.test import taddons, tflow

from egressproxy.runtime.hook_table import HookTable

Calls = list[str]
REPO = Path(__file__).resolve().parents[2]


class First:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def request(self, flow: object) -> None:
        self.calls.append("first.request")

    async def response(self, flow: object) -> None:
        await asyncio.sleep(0)
        self.calls.append("first.response")


class Second:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def request(self, flow: object) -> None:
        self.calls.append("second.request")

    def response(self, flow: object) -> None:
        self.calls.append("second.response")

    def configure(self, updated: set[str]) -> None:
        self.calls.append(f"second.configure {sorted(updated)}")


class After:
    """A plain addon after the table in mitmproxy's chain (as NextLayer and TlsConfig are)."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def request(self, flow: object) -> None:
        self.calls.append("after.request")


def test_methods_run_in_member_order_then_the_rest_of_the_chain() -> None:
    calls: Calls = []
    with taddons.context() as tctx:
        tctx.master.addons.add(HookTable([First(calls), Second(calls)]), After(calls))
        flow = tflow.tflow(resp=True)
        asyncio.run(tctx.master.addons.trigger_event(HttpRequestHook(flow)))
        asyncio.run(tctx.master.addons.trigger_event(HttpResponseHook(flow)))
    assert calls == ["first.request", "second.request", "after.request", "first.response", "second.response"]


def test_only_hooks_some_member_defines_are_dispatched_and_sync_ones_stay_sync() -> None:
    calls: Calls = []
    table = HookTable([First(calls), Second(calls)])
    assert not hasattr(table, "tcp_message") and not hasattr(table, "client_connected")
    assert set(table.hooks) == {"request", "response", "configure"}
    with taddons.context() as tctx:
        tctx.master.addons.add(table)
        calls.clear()
        tctx.master.addons.invoke_addon_sync(table, hooks.ConfigureHook({"x"}))  # mitmproxy's sync path
    assert calls == ["second.configure ['x']"]


class Failing:
    def request(self, flow: object) -> None:
        raise KeyError("bug in an addon")

    async def response(self, flow: object) -> None:
        raise ValueError("async bug in an addon")


def test_a_failing_member_is_logged_as_mitmproxy_logs_it_and_the_next_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: Calls = []
    with taddons.context() as tctx:
        tctx.master.addons.add(HookTable([Failing(), Second(calls)]))
        flow = tflow.tflow(resp=True)
        with caplog.at_level(logging.ERROR):
            asyncio.run(tctx.master.addons.trigger_event(HttpRequestHook(flow)))
            asyncio.run(tctx.master.addons.trigger_event(HttpResponseHook(flow)))
    assert calls == ["second.request", "second.response"]
    errors = [r for r in caplog.records if r.getMessage().startswith("Addon error:")]
    assert [r.getMessage() for r in errors] == ["Addon error: 'bug in an addon'", "Addon error: async bug in an addon"]
    assert all(r.exc_info is not None for r in errors)


class Halting:
    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        raise exceptions.AddonHalt()

    def configure(self, updated: set[str]) -> None:
        if "refused" in updated:
            raise exceptions.OptionsError("refused")


class Recording:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        self.calls.append("server_connect")


def test_addon_halt_stops_the_whole_chain_and_options_errors_still_refuse() -> None:
    calls: Calls = []
    with taddons.context() as tctx:
        tctx.master.addons.add(HookTable([Halting(), Recording(calls)]), Recording(calls))
        data = server_hooks.ServerConnectionHookData(server=tflow.tserver_conn(), client=tflow.tclient_conn())
        asyncio.run(tctx.master.addons.trigger_event(server_hooks.ServerConnectHook(data)))
        assert calls == []
        with pytest.raises(exceptions.OptionsError):
            tctx.master.addons.invoke_addon_sync(tctx.master.addons.chain[-2], hooks.ConfigureHook({"refused"}))


def test_the_gateway_enters_mitmproxys_chain_once(tmp_path: Path) -> None:
    # A fresh interpreter: build_master installs mitmproxy patches this process must not keep.
    script = textwrap.dedent(f"""
    import asyncio
    from pathlib import Path
    from egressproxy.runtime.hook_table import HookTable
    from egressproxy.runtime.master import build_master
    from egressproxy.runtime.reloader import ConfigSource, Reloader
    from egressproxy.runtime.state import GatewayState

    async def main():
        state = GatewayState(Path({str(tmp_path)!r}))
        master, ours = build_master(["regular@127.0.0.1:0"], state, Reloader(ConfigSource(()), state))
        chain = master.addons.chain
        tables = [a for a in chain if isinstance(a, HookTable)]
        assert len(tables) == 1 and list(tables[0].members) == ours.addons, chain
        assert not any(a in chain for a in ours.addons)
        for name, methods in tables[0].hooks.items():  # every hook method of every addon, in the addons' order
            owners = [a for a in ours.addons if callable(getattr(a, name, None))]
            assert [m.__self__ for m in methods] == owners, name
        print(sorted(tables[0].hooks))

    asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60,
                         env={"PYTHONPATH": str(REPO), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert {"client_connected", "next_layer", "requestheaders", "response", "tls_start_client"} <= set(eval(out.stdout))


class Router:
    """Decides the flow on `request` and names the steps idle for it (as HttpRoutes does on requestheaders)."""

    def __init__(self, calls: Calls, idle: frozenset[str]) -> None:
        self.calls, self.idle = calls, idle

    async def request(self, flow: http.HTTPFlow) -> None:
        self.calls.append("router.request")
        flow.metadata["idle"] = self.idle


class Stepped:
    def __init__(self, calls: Calls, step: str) -> None:
        self.calls, self.step = calls, step

    async def request(self, flow: object) -> None:
        self.calls.append(f"{self.step}.request")

    def response(self, flow: object) -> None:
        self.calls.append(f"{self.step}.response")

    def configure(self, updated: set[str]) -> None:
        self.calls.append(f"{self.step}.configure")


def _idle_of(flow: http.HTTPFlow) -> frozenset[str]:
    return flow.metadata.get("idle", frozenset())


def test_members_idle_for_a_flow_are_not_called_on_its_request_hooks() -> None:
    """Before the router, every member runs; after it (same dispatch included) the idle ones are skipped;
    members without a step, and hooks that are not a request's, are never skipped."""
    calls: Calls = []
    members = [Stepped(calls, "early"), Router(calls, frozenset({"early", "idle"})), Stepped(calls, "idle"),
               Stepped(calls, "busy"), Second(calls)]
    with taddons.context() as tctx:
        table = HookTable(members, idle_of=_idle_of)
        tctx.master.addons.add(table)
        flow = tflow.tflow(resp=True)
        asyncio.run(tctx.master.addons.trigger_event(HttpRequestHook(flow)))
        asyncio.run(tctx.master.addons.trigger_event(HttpResponseHook(flow)))
        calls.append("--")
        tctx.master.addons.invoke_addon_sync(table, hooks.ConfigureHook({"x"}))
    assert calls == [
        "early.request", "router.request", "busy.request", "second.request",
        "busy.response", "second.response",
        "--", "early.configure", "idle.configure", "busy.configure", "second.configure ['x']",
    ]


def test_without_idle_of_no_member_is_skipped() -> None:
    calls: Calls = []
    with taddons.context() as tctx:
        tctx.master.addons.add(HookTable([Router(calls, frozenset({"idle"})), Stepped(calls, "idle")]))
        asyncio.run(tctx.master.addons.trigger_event(HttpRequestHook(tflow.tflow(resp=True))))
    assert calls == ["router.request", "idle.request"]
