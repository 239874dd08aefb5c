"""The dial guard's typed outcomes: a refusal or failure is left on the connection record under the dialled
(host, port), a new dial clears the previous one's, and a failed connect names the destination."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mitmproxy import connection
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from addons.dial_guard import DialGuard
from egressproxy.flowrecord import Verdict
from egressproxy.outcomes import GatewayFailure
from egressproxy.runtime.state import GatewayState
from egressproxy.upstreams import Upstream
from tests.unit.test_compiler import compiled

GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: allow-all
  listeners: [{name: http, protocol: HTTP}]
"""


def setup(tmp_path: Path) -> tuple[GatewayState, DialGuard, connection.Client]:
    state = GatewayState(tmp_path)
    state.swap(compiled(GATEWAY))
    client = connection.Client(peername=("127.0.0.1", 50000), sockname=("127.0.0.1", 8080), timestamp_start=0.0)
    return state, DialGuard(state), client


def dial(guard: DialGuard, client: connection.Client, host: str, port: int, *, fail: str | None = None) -> connection.Server:
    server = connection.Server(address=(host, port))

    async def run() -> None:
        await guard.server_connect(ServerConnectionHookData(server, client))
        if not server.error:
            server.error = fail
            if fail is not None:
                guard.server_connect_error(ServerConnectionHookData(server, client))
            else:
                guard.server_connected(ServerConnectionHookData(server, client))

    asyncio.run(run())
    return server


def test_an_ssrf_refusal_is_a_denial_on_the_record_and_a_new_dial_clears_it(tmp_path: Path) -> None:
    state, guard, client = setup(tmp_path)
    record = state.connection(client.id)
    record.upstreams[("127.0.0.1", 80)] = Upstream("127.0.0.1", 80, "http")
    dial(guard, client, "127.0.0.1", 80)
    outcome = record.dial_outcomes[("127.0.0.1", 80)]
    assert isinstance(outcome, Verdict) and outcome.reason == "destination-address-denied"
    record.upstreams[("127.0.0.1", 80)] = Upstream("127.0.0.1", 80, "http", trusted=True)  # e.g. after a reload
    dial(guard, client, "127.0.0.1", 80)
    assert ("127.0.0.1", 80) not in record.dial_outcomes


def test_a_failed_connect_is_unreachable_naming_name_and_address(tmp_path: Path) -> None:
    state, guard, client = setup(tmp_path)
    record = state.connection(client.id)
    record.upstreams[("127.0.0.1", 9)] = Upstream("127.0.0.1", 9, "http", trusted=True)
    dial(guard, client, "127.0.0.1", 9, fail="[Errno 111] Connect call failed ('127.0.0.1', 9)")  # asyncio's words
    assert record.dial_outcomes[("127.0.0.1", 9)] == GatewayFailure(
        "upstream-unreachable", "connecting to 127.0.0.1:9 (127.0.0.1) failed: Connection refused"
    )
    samples = state.metrics.registry.get_sample_value("egress_upstream_errors_total", {"reason": "upstream-unreachable"})
    assert samples == 1


def test_an_undecided_dial_is_refused_before_any_lookup(tmp_path: Path) -> None:
    state, guard, client = setup(tmp_path)
    state.connection(client.id)
    server = dial(guard, client, "elsewhere.test", 443)
    assert server.error and "not allowed by any decision" in server.error
    assert server.address == ("elsewhere.test", 443)  # never rewritten to an address
