"""Connection decisions in transparent mode, where only the original destination address is known up front."""

from __future__ import annotations

import pytest

from egressproxy.decisions import Action, RequestView, decide_connection, decide_request
from egressproxy.matching import Carries, select_listener
from egressproxy.snapshot import Snapshot
from tests.unit.test_compiler import compiled

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: gw}
spec:
  defaultPolicy: %s
  listeners:
  - name: https
    protocol: HTTPS
    tls: {mode: Terminate, caCertRef: {name: egress-ca}}
  - name: http
    protocol: HTTP
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: plain}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [plain.example.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
"""


@pytest.fixture(params=["deny-all", "allow-all"])
def snapshot(request: pytest.FixtureRequest) -> Snapshot:
    return compiled(CONFIG % request.param)


def test_plain_http_to_a_bare_address_is_decided_per_request(snapshot: Snapshot) -> None:
    """The Host header names the destination: the connection is kept for HTTP, each request decides."""
    decision = decide_connection(snapshot, Carries.HTTP, 80, ip="192.0.2.10")
    assert decision.action is Action.HTTP
    assert decision.verdict.allowed
    assert decision.listener is None  # each request picks its listener, as absolute-form HTTP does
    assert decision.host is None


def test_each_request_then_follows_its_host_header() -> None:
    snapshot = compiled(CONFIG % "deny-all")
    listener = select_listener(snapshot.gateway, Carries.HTTP, 80, "plain.example.test", None).listener
    assert listener is not None and listener.name == "http"
    allowed = decide_request(snapshot, listener, RequestView("plain.example.test", 80, "GET", "/x", scheme="http"))
    assert allowed.verdict.allowed
    denied = decide_request(snapshot, listener, RequestView("other.example.test", 80, "GET", "/x", scheme="http"))
    assert not denied.verdict.allowed and denied.verdict.reason == "no-route"


def test_tls_without_sni_to_a_bare_address_still_follows_default_policy() -> None:
    deny = decide_connection(compiled(CONFIG % "deny-all"), Carries.TLS, 443, ip="192.0.2.10")
    assert deny.action is Action.CLOSE and deny.verdict.reason == "no-route"
    allow = decide_connection(compiled(CONFIG % "allow-all"), Carries.TLS, 443, ip="192.0.2.10")
    assert allow.action is Action.INTERCEPT


def test_plain_http_without_an_http_listener_is_closed() -> None:
    snapshot = compiled(
        """
        apiVersion: clrk.apoxy.dev/v1alpha1
        kind: EgressGateway
        metadata: {name: gw}
        spec:
          defaultPolicy: deny-all
          listeners:
          - name: tcp
            protocol: TCP
        """
    )
    decision = decide_connection(snapshot, Carries.HTTP, 80, ip="192.0.2.10")
    assert decision.action is Action.CLOSE and decision.verdict.reason == "no-route"
