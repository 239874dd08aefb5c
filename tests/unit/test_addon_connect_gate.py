"""addons/connect_gate.py: each CONNECT is decided on its authority before any tunnel opens.

Driven with mitmproxy's own test helpers (taddons.context, tflow), without sockets: what the hook writes into
the flow (a 403 with the JSON body, or nothing and the tunnel's record) is what a client and the later addons see.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow, tutils

from addons.connect_gate import ConnectGate
from egressproxy.decision_trace import TRACE_KEY
from egressproxy.engine.answers import flow_record
from tests.support.addon_state import compile_snapshot, counter, state_for

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: ca}}}
  - {name: pass, protocol: TLS, port: 8443, tls: {mode: Passthrough}}
  upstreamTLS:
    hostAliases:
    - {ip: 192.0.2.10, hostnames: [public.example.org]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [api.example.com]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: pass}
spec:
  parentRefs: [{name: eg, sectionName: pass}]
  hostnames: [public.example.org]
"""


@pytest.fixture(scope="module")
def snapshot():
    return compile_snapshot(CONFIG, ca="ca")


def _connect(host: str, port: int = 443, **headers: str) -> http.HTTPFlow:
    req = tutils.treq(
        method=b"CONNECT", host=host, port=port, scheme=b"", authority=f"{host}:{port}".encode(), path=b"",
        headers=http.Headers(**headers), content=b"",
    )
    return tflow.tflow(req=req)


def _run(gate: ConnectGate, flow: http.HTTPFlow) -> None:
    with taddons.context(gate):
        asyncio.run(gate.http_connect(flow))


@pytest.mark.parametrize("spelling", ["api.example.com", "API.Example.COM."])
def test_a_routed_connect_opens_and_records_the_canonical_authority(snapshot, tmp_path: Path, spelling: str) -> None:
    state = state_for(snapshot, tmp_path)
    gate = ConnectGate(state)
    flow = _connect(spelling)
    _run(gate, flow)
    assert flow.response is None  # no answer: mitmproxy answers 200 and the tunnel opens
    record = state.connection(flow.client_conn.id)
    assert (record.connect_host, record.port, record.generation) == ("api.example.com", 443, snapshot.generation)
    assert flow.request.host == "api.example.com"  # the canonical spelling is what gets dialled
    assert flow_record(flow).listener == "https"
    assert flow.comment.startswith("allowed")  # the opened tunnel's trace, for mitmweb


@pytest.mark.parametrize("host", ["api.example.com", "unrouted.example.com"])
def test_without_a_flow_list_a_connect_gets_no_trace(snapshot, tmp_path: Path, host: str) -> None:
    """`egressproxy run` (GatewayState.flow_traces off): the decision is the same, no trace text is built."""
    state = state_for(snapshot, tmp_path)
    state.flow_traces = False
    flow = _connect(host)
    _run(ConnectGate(state), flow)
    assert (flow.response is None) == (host == "api.example.com")
    assert not flow.comment and TRACE_KEY not in flow.metadata


@pytest.mark.parametrize(
    ("host", "port", "reason"),
    [("unrouted.example.com", 443, "no-route"), ("bad_host!", 443, "invalid-host")],
)
def test_a_denied_connect_gets_a_403_with_the_json_body_before_any_tunnel(snapshot, tmp_path, host, port, reason) -> None:
    state = state_for(snapshot, tmp_path)
    flow = _connect(host, port)
    _run(ConnectGate(state), flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert flow.response.headers["x-egress-denied"] == reason
    body = json.loads(flow.response.content or b"")
    assert body["reason"] == reason and body["policy"] in ("EgressGateway/default/eg", "")
    assert state.connection(flow.client_conn.id).connect_host is None  # no tunnel recorded
    denied = state.connection(flow.client_conn.id).denied_connect  # for the connection's finished record
    assert denied is not None and denied[0] == host and denied[2].reason == reason
    assert counter(state, "egress_denials_total", reason=reason) == 1
    assert flow.marked


def test_without_a_configuration_every_connect_is_denied(tmp_path) -> None:
    state = state_for(None, tmp_path)
    flow = _connect("api.example.com")
    _run(ConnectGate(state), flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert flow.response.headers["x-egress-denied"] == "no-route"


def test_proxy_credentials_are_never_forwarded(snapshot, tmp_path) -> None:
    flow = _connect("api.example.com", **{"proxy-authorization": "Basic Zm9vOmJhcg=="})
    _run(ConnectGate(state_for(snapshot, tmp_path)), flow)
    assert "proxy-authorization" not in flow.request.headers


def test_a_passthrough_tunnel_pins_the_checked_address_for_the_dial(snapshot, tmp_path) -> None:
    """A tunnel only its authority can take is checked before the 200, and the checked address is the one dialled."""
    state = state_for(snapshot, tmp_path)
    flow = _connect("public.example.org", 8443)
    _run(ConnectGate(state), flow)
    assert flow.response is None
    record = state.connection(flow.client_conn.id)
    assert record.pinned_addresses[("public.example.org", 8443)] == "192.0.2.10"
