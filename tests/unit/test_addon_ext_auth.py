"""addons/ext_auth.py with mitmproxy's test helpers and a stand-in client: the answer's fate on the flow
(headers upstream, the service's own denial, Report counted), and an unexpected error failing closed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mitmproxy.test import taddons, tflow

from addons.ext_auth import ExtAuth
from egressproxy.config.problems import ObjectRef
from egressproxy.engine.answers import flow_record
from egressproxy.ext_auth import ExtAuthAnswer, HeaderEdit
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
kind: GatewayExtension
metadata: {{name: authz}}
spec:
  type: ExtAuth
  extAuth: {{grpcService: {{backendRef: {{name: authz, port: 9001}}}}}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: check}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}}]
  {mode}
  extAuth: {{extensionRef: {{name: authz}}}}
"""


class StandIn:
    """Answers every check with `answer` (or raises it), remembering what it was asked."""

    def __init__(self, answer: ExtAuthAnswer | Exception) -> None:
        self.answer = answer
        self.asked: list[object] = []

    async def check(self, snapshot: object, service: object, request: object) -> ExtAuthAnswer:
        self.asked.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def close(self) -> None:
        pass


def run(tmp_path: Path, answer: ExtAuthAnswer | Exception, mode: str = ""):  # type: ignore[no-untyped-def]
    state = state_for(compile_snapshot(CONFIG.format(mode=mode)), tmp_path)
    addon = ExtAuth(state)
    addon.client = StandIn(answer)  # type: ignore[assignment]
    flow = tflow.tflow()
    flow.request.host = "api.example.test"
    frec = flow_record(flow)
    frec.verdict = Verdict.allow("route", "HTTPRoute/default/api")
    frec.route_ref = ObjectRef("HTTPRoute", "default", "api")
    frec.listener, frec.rule, frec.host = "http", 0, "api.example.test"
    frec.identity = Identity("prod", "agent")
    with taddons.context(addon):
        asyncio.run(addon.requestheaders(flow))
    return state, addon, flow


def test_ok_sends_the_services_headers_upstream(tmp_path: Path) -> None:
    _, addon, flow = run(tmp_path, ExtAuthAnswer(True, (HeaderEdit("x-user", "alice"),)))
    assert flow.response is None and flow.request.headers["x-user"] == "alice"
    assert len(addon.client.asked) == 1
    assert "ext-auth GatewayExtension/default/authz: allow" in trace_lines(flow)


def test_a_denial_is_the_services_response(tmp_path: Path) -> None:
    state, _, flow = run(tmp_path, ExtAuthAnswer(False, status=401, headers=(("www-authenticate", "Bearer"),), body=b"no"))
    assert flow.response is not None
    assert (flow.response.status_code, flow.response.content) == (401, b"no")
    assert flow.response.headers["www-authenticate"] == "Bearer"
    assert flow.response.headers["x-egress-denied"] == "ext-auth-denied"
    assert flow_record(flow).verdict == Verdict.deny(
        "ext-auth-denied", "TrafficPolicy/default/check", "the ext_authz service of GatewayExtension/default/authz denied the request", 401)
    assert counter(state, "egress_denials_total", reason="ext-auth-denied") == 1


def test_report_mode_passes_and_counts(tmp_path: Path) -> None:
    state, _, flow = run(tmp_path, ExtAuthAnswer(False), mode="enforcementMode: Report")
    assert flow.response is None
    assert counter(state, "egress_policy_reports_total", reason="ext-auth-denied", policy="TrafficPolicy/default/check") == 1
    assert counter(state, "egress_denials_total", reason="ext-auth-denied") == 0


def test_an_unexpected_error_denies(tmp_path: Path) -> None:
    state, _, flow = run(tmp_path, RuntimeError("boom"))
    assert flow.response is not None and flow.response.status_code == 403
    assert flow.response.headers["x-egress-denied"] == "internal-error"
    assert counter(state, "egress_hook_errors_total", addon="ExtAuth", hook="requestheaders") == 1
