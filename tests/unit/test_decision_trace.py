"""egressproxy/decision_trace.py: one trace shape for every flow, from the typed record, names and reasons only."""

from __future__ import annotations

import pytest

from addons.connection_table import sidecar_identity
from egressproxy.decision_trace import Ending, check_line, render, trace_data
from egressproxy.flowrecord import UNKNOWN_IDENTITY, Check, FlowRecord, Verdict


def _record(**fields: object) -> FlowRecord:
    record = FlowRecord(listener="https", route="team-a/api", host="api.example.test", port=443)
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def test_the_identity_says_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGRESS_NAMESPACE", "shop")
    monkeypatch.setenv("EGRESS_SERVICE_ACCOUNT", "checkout")
    record = _record(identity=sidecar_identity(), verdict=Verdict.allow("route"))
    assert "identity: shop/checkout (from sidecar environment EGRESS_NAMESPACE/EGRESS_SERVICE_ACCOUNT)" in render(record, Ending(200)).splitlines()
    assert sidecar_identity() == type(sidecar_identity())("shop", "checkout")  # the source is not part of equality
    unknown = render(_record(identity=UNKNOWN_IDENTITY), Ending(None))
    assert "identity: unknown/unknown (from none: no proxy credentials and no sidecar identity)" in unknown.splitlines()


def test_a_refused_dial_and_a_gateway_error_are_in_the_trace() -> None:
    record = _record(verdict=Verdict.deny("destination-address-denied", "EgressGateway/default/eg"))
    lines = render(record, Ending(403, refused_dial="destination-address-denied by EgressGateway/default/eg")).splitlines()
    assert lines[0] == "denied: destination-address-denied by EgressGateway/default/eg"
    assert "destination: api.example.test:443 refused (destination-address-denied by EgressGateway/default/eg)" in lines
    failed = _record(verdict=Verdict.allow("route"), error="upstream-tls-invalid", error_detail="api.example.test:443: certificate expired")
    lines = render(failed, Ending(502, via_hop=False)).splitlines()
    assert lines[:2] == ["gateway error: upstream-tls-invalid: api.example.test:443: certificate expired",
                         "outcome: error 502 reason: upstream-tls-invalid"]
    assert trace_data(failed, Ending(502))["reason"] == "upstream-tls-invalid"


@pytest.mark.parametrize(
    ("check", "line"),
    [
        (Check("policy", "TrafficPolicy/ns/p", "deny", "rbac-denied"), "policy TrafficPolicy/ns/p: deny (rbac-denied)"),
        (Check("report", "RateLimitPolicy/ns/r", "report", "rate-limited"), "report RateLimitPolicy/ns/r: report (rate-limited)"),
        (Check("region", "RegionAllowListPolicy/ns/eu", "allow", detail="eu-west-1 (from hostname)"),
         "region RegionAllowListPolicy/ns/eu: allow (eu-west-1 (from hostname))"),
        (Check("ai", detail="models: m allowed by TrafficPolicy/ns/ai"), "ai: models: m allowed by TrafficPolicy/ns/ai"),
        (Check("retry", detail="walk over 3 attempts"), "retry: walk over 3 attempts"),
    ],
)
def test_one_line_shape_for_every_step(check: Check, line: str) -> None:
    assert check_line(check) == line


def test_the_trace_data_is_plain() -> None:
    """It goes to flow.metadata, which mitmproxy serializes with tnetstring: plain types only."""
    record = _record(verdict=Verdict.allow("route"), checks=[Check("route", "HTTPRoute/team-a/api", "allow", "route")],
                     credential="CredentialInjectionPolicy/team-a/key")
    data = trace_data(record, Ending(200, dialled="127.0.0.1:443", captured=True))

    def plain(value: object) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (str, int, bool, float))

    assert plain(data)
    assert data["credential"] == "CredentialInjectionPolicy/team-a/key" and data["captured"] is True


def test_annotate_reads_the_dial_guards_refusal_and_marks_the_flow() -> None:
    """egressproxy/engine/flow_trace.py: the refusal the dial guard wrote for the candidate it dialled."""
    from mitmproxy.test import tflow, tutils

    from egressproxy.engine.answers import flow_record
    from egressproxy.engine.flow_trace import annotate
    from egressproxy.flowrecord import ConnectionRecord
    from egressproxy.upstreams import Upstream

    flow = tflow.tflow(resp=tutils.tresp(status_code=403))
    flow.server_conn.timestamp_start = None  # never connected
    record = flow_record(flow)
    record.host, record.port = "api.example.test", 443
    record.upstream = Upstream("static.internal", 8443)
    denial = Verdict.deny("destination-address-denied", "EgressGateway/default/eg")
    record.verdict = denial
    connection = ConnectionRecord()
    connection.dial_outcomes[("static.internal", 8443)] = denial
    annotate(flow, record, connection)
    assert flow.marked == ":no_entry:"
    assert "destination: api.example.test:443 refused (destination-address-denied by EgressGateway/default/eg)" in flow.comment.splitlines()
