"""addons/failover.py on mitmproxy flows (taddons, tflow): which flows go to the hop, and what they carry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow, tutils

from addons.failover import Failover
from egressproxy.engine.answers import flow_record
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Snapshot
from egressproxy.traffic_retries import RetryPolicy
from egressproxy.upstream_hop import HOP_HEADER
from egressproxy.upstreams import Upstream
from tests.support.addon_state import compile_snapshot, state_for
from tests.support.trace import trace_lines

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  listeners:
  - {name: http, protocol: HTTP}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: HTTPListenerPolicy
metadata: {name: buffer}
spec:
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}]
  buffer: {maxRequestBytes: 1000}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: ai}
spec:
  type: AI
  ai:
    priorityGroups:
    - providers:
      - {name: a, openai: {authToken: {kind: Inline, inline: key-a}}}
    - providers:
      - name: b
        openai: {authToken: {kind: Inline, inline: key-b}, hostOverride: {host: b.example.com}}
"""


@pytest.fixture
def snapshot() -> Snapshot:
    return compile_snapshot(CONFIG)


@pytest.fixture
def state(snapshot: Snapshot, tmp_path: Path) -> GatewayState:
    return state_for(snapshot, tmp_path)


def _candidates(snapshot: Snapshot) -> tuple[Upstream, ...]:
    backend = next(b for b in snapshot.backends.values() if b.ref.name == "ai")
    (a,), (b,) = backend.ai_groups
    return (Upstream("api.openai.com", 443, backend=backend, provider=a),
            Upstream("b.example.com", 443, backend=backend, provider=b, group=1))


def _flow(candidates: tuple[Upstream, ...], body: bytes = b"{}", method: str = "POST", retry: RetryPolicy | None = None) -> http.HTTPFlow:
    req = tutils.treq(host="api.openai.com", port=443, scheme=b"https", authority=b"", path=b"/v1/chat/completions",
                      method=method.encode(), content=body)
    req.headers["authorization"] = "Bearer dummy"
    f = tflow.tflow(req=req)
    record = flow_record(f)
    record.upstream, record.candidates, record.listener, record.retry = candidates[0] if candidates else None, candidates, "http", retry
    return f


def _run(state: GatewayState, f: http.HTTPFlow) -> None:
    addon = Failover(state)

    async def go() -> None:
        await addon.request(f)
        await state.hop.stop()

    with taddons.context(addon):
        asyncio.run(go())


def test_several_ai_candidates_go_to_the_hop_with_a_ticket(state: GatewayState, snapshot: Snapshot) -> None:
    f = _flow(_candidates(snapshot))
    _run(state, f)
    record = flow_record(f)
    assert (f.request.scheme, f.request.host, f.request.port) == ("http", "127.0.0.1", state.hop.port)
    token, ticket = f.request.headers[HOP_HEADER].split(" ")
    assert token == state.hop.token and ticket == record.hop
    hop_key = ("127.0.0.1", state.hop.port)
    assert state.connection(f.client_conn.id).upstreams[hop_key].trusted
    assert f.request.headers["authorization"] == "Bearer dummy"  # the hop strips and injects per candidate
    Failover(state).responseheaders(f)
    assert HOP_HEADER not in f.request.headers


def test_one_candidate_goes_straight_to_it(state: GatewayState, snapshot: Snapshot) -> None:
    f = _flow(_candidates(snapshot)[:1])
    _run(state, f)
    assert f.request.host == "api.openai.com" and HOP_HEADER not in f.request.headers and flow_record(f).hop is None


def test_a_body_over_the_replay_buffer_goes_to_the_first_candidate_only(state: GatewayState, snapshot: Snapshot) -> None:
    f = _flow(_candidates(snapshot), body=b"x" * 1001)
    _run(state, f)
    assert f.request.host == "api.openai.com" and flow_record(f).hop is None


def test_a_retry_policy_walks_a_plain_get_but_not_a_post(state: GatewayState) -> None:
    plain = (Upstream("api.example.com", 443),)
    retry = RetryPolicy("TrafficPolicy/default/tp", attempts=2)
    get = _flow(plain, method="GET", retry=retry)
    _run(state, get)
    assert get.request.host == "127.0.0.1" and "retry: walk over 3 attempts" in trace_lines(get)
    post = _flow(plain, method="POST", retry=retry)
    _run(state, post)
    assert post.request.host != "127.0.0.1" and flow_record(post).hop is None
