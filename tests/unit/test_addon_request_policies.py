"""addons/request_policies.py with mitmproxy's test helpers: 413 on a declared length, CEL on the head when no
expression reads the body, on the whole body when one does, Report mode counted, the trace on the comment."""

from __future__ import annotations

import json
from pathlib import Path

from mitmproxy.test import taddons, tflow

from addons.request_policies import RequestPolicies
from egressproxy.config.problems import ObjectRef
from egressproxy.engine.answers import flow_record
from egressproxy.flowrecord import Identity, Verdict
from tests.support.addon_state import compile_snapshot, counter, state_for
from tests.support.trace import trace_lines

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  listeners: [{{name: http, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api}}
spec:
  parentRefs: [{{name: eg}}]
  hostnames: [api.example.test]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: HTTPListenerPolicy
metadata: {{name: limits}}
spec:
  targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}}]
  buffer: {{maxRequestBytes: 16}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: rbac}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}}]
  {mode}
  rbac:
    policy:
      matchExpressions: [{expression}]
"""


def make(tmp_path: Path, expression: str, mode: str = ""):  # type: ignore[no-untyped-def]
    snapshot = compile_snapshot(CONFIG.format(expression=expression, mode=mode))
    state = state_for(snapshot, tmp_path)
    return state, RequestPolicies(state)


def routed(headers: dict[str, str] | None = None, content: bytes = b"", namespace: str = "prod"):  # type: ignore[no-untyped-def]
    flow = tflow.tflow()
    flow.request.host = "api.example.test"
    flow.request.content = content
    for name, value in (headers or {}).items():
        flow.request.headers[name] = value
    frec = flow_record(flow)
    frec.verdict = Verdict.allow("route", "HTTPRoute/default/api")
    frec.route_ref = ObjectRef("HTTPRoute", "default", "api")
    frec.listener, frec.rule, frec.host = "http", 0, "api.example.test"
    frec.identity = Identity(namespace, "agent")
    return flow


def test_a_declared_length_past_the_limit_is_413_on_the_head(tmp_path: Path) -> None:
    state, addon = make(tmp_path, "'true'")
    flow = routed(content=b"x" * 17)
    with taddons.context(addon):
        addon.requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 413
    assert json.loads(flow.response.content)["policy"] == "HTTPListenerPolicy/default/limits"
    assert counter(state, "egress_denials_total", reason="body-too-large") == 1
    assert addon.pending == {}


def test_a_body_without_a_length_is_counted_when_read(tmp_path: Path) -> None:
    state, addon = make(tmp_path, "'true'")
    flow = routed(content=b"x" * 17)
    del flow.request.headers["content-length"]
    with taddons.context(addon):
        addon.requestheaders(flow)
        assert flow.response is None and flow.id in addon.pending
        addon.request(flow)
    assert flow.response is not None and flow.response.status_code == 413


def test_cel_without_body_decides_on_the_head_and_traces_it(tmp_path: Path) -> None:
    state, addon = make(tmp_path, """'source.identity.namespace == "prod"'""")
    allowed, denied = routed(), routed(namespace="dev")
    with taddons.context(addon):
        addon.requestheaders(allowed)
        addon.requestheaders(denied)
    assert allowed.response is None
    assert any(line.startswith("policy TrafficPolicy/default/rbac: allow (spec.rbac.policy.matchExpressions[0] (Allow) is true")
               for line in trace_lines(allowed))
    assert denied.response is not None and denied.response.headers["x-egress-denied"] == "rbac-denied"
    assert not allowed.comment and not denied.comment  # typed steps only: the text is built when the flow ends


def test_cel_reading_the_body_waits_for_it(tmp_path: Path) -> None:
    state, addon = make(tmp_path, """'request.body.model == "m"'""")
    ok, wrong = routed(content=b'{"model": "m"}'), routed(content=b'{"model": "x"}')
    with taddons.context(addon):
        for flow in (ok, wrong):
            addon.requestheaders(flow)
            assert flow.response is None  # not decided before the body is there
            addon.request(flow)
    assert ok.response is None
    assert wrong.response is not None and wrong.response.status_code == 403


def test_report_mode_passes_and_counts(tmp_path: Path) -> None:
    state, addon = make(tmp_path, "'false'", mode="enforcementMode: Report")
    flow = routed()
    with taddons.context(addon):
        addon.requestheaders(flow)
    assert flow.response is None
    assert counter(state, "egress_policy_reports_total", reason="rbac-denied", policy="TrafficPolicy/default/rbac") == 1
    assert "report TrafficPolicy/default/rbac: report (rbac-denied)" in trace_lines(flow)


def test_a_denied_or_unrouted_flow_is_left_alone(tmp_path: Path) -> None:
    state, addon = make(tmp_path, "'false'")
    flow = routed()
    flow_record(flow).verdict = Verdict.deny("no-route")
    with taddons.context(addon):
        addon.requestheaders(flow)
    assert flow.response is None and addon.pending == {}
