"""addons/flow_metrics.py: every HTTP request ends in exactly one finished record for the sinks.

What a user observes is `egress_requests_total` (and the duration histogram) labelled with what the deciding
addons wrote into the flow's record, counted once whether the request ended in a response or an error, and a
the decision trace on the flow (comment, marker, metadata) that mitmweb shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow, tutils

from addons.flow_metrics import FlowMetrics
from egressproxy.engine.answers import flow_record
from egressproxy.decision_trace import TRACE_KEY
from egressproxy.flowrecord import Attempt, Check, FinishedRequest, Identity, Verdict
from egressproxy.runtime.state import GatewayState
from egressproxy.sinks import Sink
from egressproxy.upstreams import Upstream
from tests.support.addon_state import counter


class Collect(Sink):
    name = "collect"

    def __init__(self) -> None:
        self.records: list[FinishedRequest] = []

    def request_finished(self, record: FinishedRequest) -> None:
        self.records.append(record)


@pytest.fixture
def state(tmp_path: Path) -> GatewayState:
    state = GatewayState(tmp_path)
    state.collect = Collect()  # type: ignore[attr-defined]
    state.sinks.register(state.collect)  # type: ignore[attr-defined]
    return state


def _flow(status: int | None, *, verdict: Verdict | None, error: str | None = None) -> http.HTTPFlow:
    flow = tflow.tflow(resp=tutils.tresp(status_code=status) if status is not None else False, err=status is None)
    record = flow_record(flow)
    record.gateway, record.listener, record.route, record.backend = "default/eg", "https", "default/api", "default/static"
    record.identity = Identity("team-a", "agent")
    record.verdict, record.error, record.host = verdict, error, "api.example.com"
    return flow


def _requests(state: GatewayState, decision: str, status_class: str) -> float:
    return counter(
        state, "egress_requests_total", gateway="default/eg", listener="https", route="default/api",
        backend="default/static", namespace="team-a", serviceaccount="agent", decision=decision, status_class=status_class,
    )


@pytest.mark.parametrize(
    ("hook", "status", "verdict", "error", "decision", "status_class"),
    [
        ("response", 200, Verdict.allow("route"), None, "allow", "2xx"),
        ("response", 403, Verdict.deny("no-route"), None, "deny", "4xx"),
        ("response", 502, Verdict.allow("route"), "upstream-unreachable", "error", "5xx"),
        ("error", None, Verdict.allow("route"), None, "allow", "none"),
    ],
)
def test_a_finished_request_is_counted_once_with_its_records_labels(state, hook, status, verdict, error, decision, status_class) -> None:
    addon = FlowMetrics(state)
    flow = _flow(status, verdict=verdict, error=error)
    with taddons.context(addon):
        getattr(addon, hook)(flow)
        getattr(addon, "response" if hook == "error" else "error")(flow)  # a second end never counts twice
    assert _requests(state, decision, status_class) == 1
    [finished] = state.collect.records
    assert (finished.status, finished.decision, finished.error, finished.host) == (status, decision, error, "api.example.com")
    assert finished.url == flow.request.url and finished.duration >= 0


def test_the_connection_counts_the_request_and_keeps_its_labels(state) -> None:
    addon = FlowMetrics(state)
    flow = _flow(200, verdict=Verdict.allow("route"))
    connection = state.connection(flow.client_conn.id)
    connection.sni = "api.example.com"
    addon.response(flow)
    assert connection.requests == 1
    assert (connection.request_listener, connection.request_route) == ("https", "default/api")
    assert state.collect.records[0].sni == "api.example.com"


def test_a_request_on_a_forgotten_connection_is_still_counted(state) -> None:
    addon = FlowMetrics(state)
    flow = _flow(200, verdict=Verdict.allow("route"))
    addon.response(flow)
    assert flow.client_conn.id not in state.connections  # never recreated just to count
    assert _requests(state, "allow", "2xx") == 1


def test_an_undecided_request_is_counted_as_unknown(state) -> None:
    addon = FlowMetrics(state)
    flow = tflow.tflow(resp=True)
    addon.response(flow)
    assert counter(
        state, "egress_requests_total", gateway="none", listener="none", route="none", backend="none",
        namespace="unknown", serviceaccount="unknown", decision="unknown", status_class="2xx",
    ) == 1


def test_mitmweb_gets_the_whole_decision_trace_when_the_flow_ends(state) -> None:
    addon = FlowMetrics(state)
    flow = _flow(200, verdict=Verdict.allow("route", "EgressPolicy/team-a/allow-api"))
    record = flow_record(flow)
    record.port = 443
    record.identity = Identity("team-a", "agent", "proxy Basic user verified by HTTPListenerPolicy/default/auth")
    record.candidates = (Upstream("a.example.com", 443), Upstream("b.example.com", 443))
    record.attempts = [Attempt("destination (a.example.com:443)", "upstream-5xx", True), Attempt("destination (b.example.com:443)", "ok")]
    record.checks = [Check("route", "EgressPolicy/team-a/allow-api", "allow", "route")]
    record.credential = "CredentialInjectionPolicy/team-a/openai-key"
    addon.response(flow)
    assert flow.comment.splitlines() == [
        "allowed: 200",
        "outcome: allow 200 reason: route by EgressPolicy/team-a/allow-api",
        "identity: team-a/agent (from proxy Basic user verified by HTTPListenerPolicy/default/auth)",
        "listener: https",
        "route: default/api",
        "backend: default/static",
        "candidates: 1. destination (a.example.com:443), 2. destination (b.example.com:443)",
        "attempt 1: destination (a.example.com:443): upstream-5xx (went on)",
        "attempt 2: destination (b.example.com:443): ok",
        "route EgressPolicy/team-a/allow-api: allow (route)",
        "destination: api.example.com:443 dialled 192.168.0.1:22 (destination check passed)",
        "credential: CredentialInjectionPolicy/team-a/openai-key",
    ]
    assert not flow.marked
    assert flow.metadata[TRACE_KEY]["attempts"][0] == {"candidate": "destination (a.example.com:443)", "outcome": "upstream-5xx", "wentOn": True}


def test_without_a_flow_list_no_trace_is_built_and_the_record_still_reaches_the_sinks(state) -> None:
    """`egressproxy run` (GatewayState.flow_traces off) keeps no flows: the finished record is all a request
    costs at its end, no comment, marker or trace metadata is written."""
    state.flow_traces = False
    addon = FlowMetrics(state)
    flow = _flow(403, verdict=Verdict.deny("no-route", "EgressGateway/default/eg"))
    record = flow_record(flow)
    record.checks = [Check("route", "EgressGateway/default/eg", "deny", "no-route")]
    addon.response(flow)
    assert not flow.comment and not flow.marked and TRACE_KEY not in flow.metadata
    [finished] = state.collect.records
    assert finished.decision == "deny"


def test_a_denied_flow_is_marked_and_its_headline_names_the_reason(state) -> None:
    addon = FlowMetrics(state)
    denied = _flow(403, verdict=Verdict.deny("no-route", "EgressGateway/default/eg"))
    addon.response(denied)
    assert denied.marked == ":no_entry:"
    assert denied.comment.splitlines()[:2] == ["denied: no-route by EgressGateway/default/eg", "outcome: deny 403 reason: no-route by EgressGateway/default/eg"]
    failed = _flow(502, verdict=Verdict.allow(), error="upstream-unreachable")
    addon.response(failed)
    assert failed.marked == ":warning:" and failed.comment.startswith("gateway error: upstream-unreachable\noutcome: error 502")

def test_the_finished_record_carries_the_clients_headers_and_path_not_injected_ones(state: GatewayState) -> None:
    """Headers and path are taken on `requestheaders`: a credential injected later never reaches a printer."""
    addon = FlowMetrics(state)
    flow = _flow(200, verdict=Verdict.allow())
    flow.request.path = "/v1/x?a=1"
    flow.request.headers["x-client"] = "mine"
    with taddons.context(addon):
        addon.requestheaders(flow)
        flow.request.headers["x-api-key"] = "injected-secret"  # what credential injection does later
        flow.request.path = "/v1/x?a=1&key=injected-query"
        addon.response(flow)
    (record,) = state.collect.records  # type: ignore[attr-defined]
    assert record.exchange is not None
    names = [name for name, _ in record.exchange.request_headers]
    assert b"x-client" in names and b"x-api-key" not in names
    assert record.exchange.path == "/v1/x?a=1"
    assert record.exchange.protocol == flow.request.http_version


def test_a_denied_connect_finishes_a_request_record(state: GatewayState) -> None:
    addon = FlowMetrics(state)
    flow = _flow(403, verdict=Verdict.deny("no-route", "EgressGateway/default/eg"))
    flow.request.method = "CONNECT"
    with taddons.context(addon):
        addon.http_connect_error(flow)
    (record,) = state.collect.records  # type: ignore[attr-defined]
    assert (record.method, record.decision, record.status) == ("CONNECT", "deny", 403)
def test_the_finished_record_carries_redacted_headers_and_a_capture_plan(state: GatewayState) -> None:
    """Credential headers keep their name with the value replaced before any sink sees the record."""
    flow = _flow(200, verdict=Verdict.allow())
    flow.request.headers["Authorization"] = "Bearer sk-live"
    flow.request.headers["X-Other"] = "fine"
    assert flow.response is not None
    flow.response.headers["Set-Cookie"] = "session=abc"
    with taddons.context():
        FlowMetrics(state).response(flow)
    (record,) = state.collect.records  # type: ignore[attr-defined]
    assert ("authorization", "[REDACTED]") in record.request_headers and ("x-other", "fine") in record.request_headers
    assert ("set-cookie", "[REDACTED]") in record.response_headers
    assert "sk-live" not in repr(record) and record.capture is not None
