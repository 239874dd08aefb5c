"""The data plane's decisions (egressproxy/decisions.py) on a compiled snapshot, without mitmproxy."""

from __future__ import annotations

import textwrap
from collections import Counter

import pytest

from egressproxy.ca import create_ca, secret_manifest
from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_text
from egressproxy.decisions import Action, RequestView, decide_connect, decide_connection, decide_request, parent_for
from egressproxy.matching import Carries

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: ca}}}
  - {name: pass, protocol: TLS, tls: {mode: Passthrough}}
  - {name: db, protocol: TCP, port: 5432}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [api.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    backendRefs:
    - {group: gateway.kgateway.dev, kind: Backend, name: primary, weight: 3}
    - {group: gateway.kgateway.dev, kind: Backend, name: never, weight: 0}
  - matches: [{path: {type: Exact, value: /blocked}}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: primary}
spec: {type: Static, static: {hosts: [{host: primary.internal, port: 443}]}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: never}
spec: {type: Static, static: {hosts: [{host: never.internal, port: 443}]}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: pinned}
spec:
  parentRefs: [{name: eg, sectionName: pass}]
  hostnames: [pinned.example.org]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressDenyPolicy
metadata: {name: no-pinned}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: TLSRoute, name: pinned}
  denyResponse: {statusCode: 451, message: pinned is closed}
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressL4Route
metadata: {name: db}
spec:
  parentRefs: [{name: eg, sectionName: db}]
  rules:
  - matches: [{destinationCIDRs: [10.1.0.0/16]}]
"""


@pytest.fixture(scope="module")
def snapshot():
    text = textwrap.dedent(CONFIG) + "---\n" + secret_manifest("ca", *create_ca("ca"))
    loaded = load_text(text, "decisions.yaml")
    assert loaded.ok, loaded.problems
    compiled = compile_config(loaded.resources)
    assert compiled.ok, compiled.problems
    return compiled.snapshot


def test_connect_to_a_routed_host_opens_and_an_unrouted_one_is_denied(snapshot) -> None:
    assert decide_connect(snapshot, "API.example.com.", 443).verdict.allowed
    denied = decide_connect(snapshot, "other.example.com", 443)
    assert (denied.verdict.allowed, denied.verdict.reason, denied.verdict.policy) == (False, "no-route", "EgressGateway/default/eg")


def test_connect_to_a_denied_passthrough_route_is_refused_with_its_policy(snapshot) -> None:
    verdict = decide_connect(snapshot, "pinned.example.org", 443).verdict
    assert (verdict.allowed, verdict.reason, verdict.status_code) == (False, "route-denied", 451)
    assert verdict.policy == "EgressDenyPolicy/default/no-pinned" and verdict.message == "pinned is closed"


def test_an_invalid_authority_is_denied_before_anything_else(snapshot) -> None:
    assert decide_connect(snapshot, "bad_host!", 443).verdict.reason == "invalid-host"


def test_sni_must_agree_with_the_connect_authority(snapshot) -> None:
    decision = decide_connection(snapshot, Carries.TLS, 443, connect_host="api.example.com", sni="evil.example.com")
    assert decision.action is Action.CLOSE and decision.verdict.reason == "sni-mismatch"
    same = decide_connection(snapshot, Carries.TLS, 443, connect_host="api.example.com", sni="API.EXAMPLE.COM")
    assert same.action is Action.INTERCEPT and same.listener is not None and same.listener.name == "https"


def test_tcp_is_relayed_by_destination_address_only_where_a_route_allows(snapshot) -> None:
    assert decide_connection(snapshot, Carries.TCP, 5432, ip="10.1.2.3").action is Action.TCP
    assert decide_connection(snapshot, Carries.TCP, 5432, ip="10.2.0.1").action is Action.CLOSE


def _request(host: str, path: str) -> RequestView:
    return RequestView(host=host, port=443, method="GET", path=path)


def test_host_header_disagreeing_with_the_tunnel_is_421(snapshot) -> None:
    listener = snapshot.gateway.listener("https")
    decision = decide_request(snapshot, listener, _request("evil.example.com", "/v1"), connection_host="api.example.com")
    assert (decision.verdict.reason, decision.verdict.status_code) == ("host-mismatch", 421)


def test_a_request_matching_no_rule_of_its_route_is_unmatched(snapshot) -> None:
    listener = snapshot.gateway.listener("https")
    decision = decide_request(snapshot, listener, _request("api.example.com", "/v2"), connection_host="api.example.com")
    assert decision.verdict.reason == "no-route" and decision.route is None


def test_weighted_backends_never_pick_a_zero_weight(snapshot) -> None:
    listener = snapshot.gateway.listener("https")
    picks = Counter()
    for _ in range(200):
        decision = decide_request(snapshot, listener, _request("api.example.com", "/v1/x"), connection_host="api.example.com")
        assert decision.verdict.allowed and decision.backend is not None
        picks[decision.backend.ref.name] += 1
    assert picks == Counter({"primary": 200})


def test_no_parent_without_parent_mode(snapshot) -> None:
    assert parent_for(snapshot, None) is None
