"""Gateway API as configs already have it: every served version of each kind (with its own shape), parentRefs
naming a Kubernetes `Gateway`, and backendRefs without group/kind resolved as Kubernetes Services."""

from __future__ import annotations

import textwrap

import pytest

from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_text
from egressproxy.config.problems import ObjectRef
from tests.unit.test_compiler import FILE, GATEWAY, compile_yaml, compiled, conditions, doc, line_of

GROUP = "gateway.networking.k8s.io"

# The EgressGateway every document below names, with a listener for each route kind.
EGRESS = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: egress}
spec:
  listeners:
  - {name: http, protocol: HTTP}
  - {name: pass, protocol: TLS, tls: {mode: Passthrough}}
  - {name: tcp, protocol: TCP}
  - {name: udp, protocol: UDP, port: 5353}
---
"""

# One valid document per kind, written as its upstream examples are; `{version}` is the apiVersion's version.
DOCUMENTS = {
    "HTTPRoute": """\
        apiVersion: gateway.networking.k8s.io/{version}
        kind: HTTPRoute
        metadata: {{name: r}}
        spec:
          parentRefs: [{{name: egress, sectionName: http}}]
          hostnames: [api.example.com]
          rules:
          - matches: [{{path: {{type: PathPrefix, value: /v1}}}}]
        """,
    "GRPCRoute": """\
        apiVersion: gateway.networking.k8s.io/{version}
        kind: GRPCRoute
        metadata: {{name: r}}
        spec:
          parentRefs: [{{name: egress, sectionName: http}}]
          hostnames: [grpc.example.com]
          rules:
          - matches: [{{method: {{service: helloworld.Greeter, method: SayHello}}}}]
        """,
    "TLSRoute": """\
        apiVersion: gateway.networking.k8s.io/{version}
        kind: TLSRoute
        metadata: {{name: r}}
        spec:
          parentRefs: [{{name: egress, sectionName: pass}}]
          hostnames: [pinned.example.com]
          rules: [{{}}]
        """,
    "TCPRoute": """\
        apiVersion: gateway.networking.k8s.io/{version}
        kind: TCPRoute
        metadata: {{name: r}}
        spec:
          parentRefs: [{{name: egress, sectionName: tcp}}]
          rules: [{{}}]
        """,
    "UDPRoute": """\
        apiVersion: gateway.networking.k8s.io/{version}
        kind: UDPRoute
        metadata: {{name: r}}
        spec:
          parentRefs: [{{name: egress, sectionName: udp}}]
          rules: [{{}}]
        """,
    "BackendTLSPolicy": """\
        apiVersion: gateway.networking.k8s.io/{version}
        kind: BackendTLSPolicy
        metadata: {{name: r}}
        spec:
          targetRefs: [{{group: "", kind: Service, name: api}}]
          validation: {{wellKnownCACertificates: System, hostname: api.example.com}}
        """,
}

SERVED = [
    ("HTTPRoute", "v1"),
    ("HTTPRoute", "v1beta1"),
    ("GRPCRoute", "v1"),
    ("GRPCRoute", "v1alpha2"),
    ("TLSRoute", "v1alpha2"),
    ("TLSRoute", "v1alpha3"),
    ("TLSRoute", "v1"),
    ("TCPRoute", "v1alpha2"),
    ("TCPRoute", "v1"),
    ("UDPRoute", "v1alpha2"),
    ("UDPRoute", "v1"),
    ("BackendTLSPolicy", "v1alpha3"),
    ("BackendTLSPolicy", "v1"),
]


def load(text: str) -> list[str]:
    return [str(p) for p in load_text(textwrap.dedent(text), "t.yaml").problems]


@pytest.mark.parametrize(("kind", "version"), SERVED)
def test_every_served_version_validates_and_compiles_with_its_egress_gateway(kind: str, version: str) -> None:
    text = EGRESS + textwrap.dedent(DOCUMENTS[kind].format(version=version))
    loaded = load_text(text, "t.yaml")
    assert [str(p) for p in loaded.problems] == []
    result = compile_config(loaded.resources)
    assert [str(p) for p in result.problems] == []
    if kind.endswith("Route"):
        assert conditions(result, ObjectRef(kind, "default", "r"))["Programmed"] == ("True", "Programmed")


@pytest.mark.parametrize(
    ("kind", "version", "served"),
    [
        ("HTTPRoute", "v1alpha2", "v1 or gateway.networking.k8s.io/v1beta1"),
        ("GRPCRoute", "v1beta1", "v1 or gateway.networking.k8s.io/v1alpha2"),
        ("TLSRoute", "v1beta1", "v1 or gateway.networking.k8s.io/v1alpha3 or gateway.networking.k8s.io/v1alpha2"),
        ("TCPRoute", "v1alpha3", "v1 or gateway.networking.k8s.io/v1alpha2"),
        ("UDPRoute", "v1beta1", "v1 or gateway.networking.k8s.io/v1alpha2"),
        ("BackendTLSPolicy", "v1alpha2", "v1 or gateway.networking.k8s.io/v1alpha3"),
    ],
)
def test_a_version_upstream_does_not_serve_is_rejected(kind: str, version: str, served: str) -> None:
    assert load(DOCUMENTS[kind].format(version=version)) == [
        f"t.yaml:1: {kind}/default/r: apiVersion: {kind} is served as {GROUP}/{served}, not '{GROUP}/{version}'"
    ]


TLS_ROUTE_WITHOUT_HOSTNAMES = """\
apiVersion: gateway.networking.k8s.io/{version}
kind: TLSRoute
metadata: {{name: r}}
spec:
  parentRefs: [{{name: egress}}]
  hostnames: {hostnames}
"""


@pytest.mark.parametrize("version", ["v1alpha3", "v1"])
def test_tls_route_v1alpha3_and_v1_require_hostnames(version: str) -> None:
    without = TLS_ROUTE_WITHOUT_HOSTNAMES.format(version=version, hostnames="[]").replace("  hostnames: []\n", "")
    assert load(without) == ["t.yaml:5: TLSRoute/default/r: spec.hostnames: required field is missing"]
    empty = TLS_ROUTE_WITHOUT_HOSTNAMES.format(version=version, hostnames="[]")
    assert load(empty) == ["t.yaml:6: TLSRoute/default/r: spec.hostnames: must have at least 1 item(s)"]


def test_tls_route_v1alpha2_keeps_hostnames_optional() -> None:
    text = TLS_ROUTE_WITHOUT_HOSTNAMES.format(version="v1alpha2", hostnames="[]").replace("  hostnames: []\n", "")
    assert load(text) == []


# --- parentRefs: the EgressGateway by default, a Kubernetes Gateway by that name ------------------------------

HTTP_ROUTE = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"


def route_with_parent(parent: str) -> str:
    return GATEWAY + doc(
        HTTP_ROUTE,
        f"""\
        metadata: {{name: h}}
        spec:
          parentRefs: [{parent}]
          hostnames: [api.example.com]
        """,
    )


@pytest.mark.parametrize(
    "parent",
    [
        "{name: gw, sectionName: http}",
        "{group: clrk.apoxy.dev, kind: EgressGateway, name: gw, sectionName: http}",
        "{kind: Gateway, name: gw, sectionName: http}",
        "{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: http}",
        "{group: gateway.networking.k8s.io, name: gw, sectionName: http}",
    ],
)
def test_parent_ref_kind_gateway_names_the_egress_gateway(parent: str) -> None:
    result = compile_yaml(route_with_parent(parent))
    assert [str(p) for p in result.problems] == []
    assert conditions(result, ObjectRef("HTTPRoute", "default", "h"))["Programmed"] == ("True", "Programmed")
    assert result.snapshot is not None
    listener = result.snapshot.gateway.listener("http")
    assert listener is not None
    assert [r.name for r in listener.http_routes.lookup("api.example.com")] == ["default/h"]
    assert listener.http_routes.lookup("other.example.com") == ()


def test_a_missing_gateway_is_named_as_the_egress_gateway() -> None:
    text = route_with_parent("{kind: Gateway, name: ghost}")
    [problem] = compile_yaml(text).problems
    assert str(problem) == (
        f'{FILE}:{line_of(text, "name: ghost")}: HTTPRoute/default/h: '
        'spec.parentRefs[0].name: EgressGateway "default/ghost" not found'
    )


@pytest.mark.parametrize(
    ("parent", "field", "named"),
    [
        ("{group: clrk.apoxy.dev, kind: Gateway, name: gw}", "group", 'Gateway in group "clrk.apoxy.dev"'),
        ("{group: example.com, kind: EgressGateway, name: gw}", "group", 'EgressGateway in group "example.com"'),
    ],
)
def test_unsupported_parents_name_their_kind_and_group(parent: str, field: str, named: str) -> None:
    text = route_with_parent(parent)
    result = compile_yaml(text)
    assert [str(p) for p in result.problems] == [
        f"{FILE}:{line_of(text, 'parentRefs: [')}: HTTPRoute/default/h: spec.parentRefs[0].{field}: "
        f"unsupported parent {named}: a route attaches to an EgressGateway (clrk.apoxy.dev) or a Gateway "
        "(gateway.networking.k8s.io, naming the EgressGateway)"
    ]
    assert conditions(result, ObjectRef("HTTPRoute", "default", "h"))["ResolvedRefs"] == ("False", "InvalidKind")


@pytest.mark.parametrize(
    "parent",
    [
        "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: parent}",  # kgateway route delegation
        "{group: gateway.networking.x-k8s.io, kind: XListenerSet, name: ls}",
        "{group: '', kind: Service, name: waypoint}",  # a mesh (GAMMA) parent
    ],
)
def test_a_parent_of_another_kind_leaves_the_route_valid_and_unattached(parent: str) -> None:
    """Gateway API leaves a parent it does not own to the implementation that does: no problem, no traffic."""
    result = compile_yaml(route_with_parent(parent))
    assert result.problems == []
    accepted = conditions(result, ObjectRef("HTTPRoute", "default", "h"))["Accepted"]
    assert accepted == ("False", "UnsupportedValue")
    assert result.snapshot is not None and ObjectRef("HTTPRoute", "default", "h") not in result.snapshot.routes


# --- backendRefs without group/kind: a Kubernetes Service ------------------------------------------------------


def route_with_backend(ref: str, extra: str = "") -> str:
    return (
        GATEWAY
        + doc(
            HTTP_ROUTE,
            f"""\
            metadata: {{name: h}}
            spec:
              parentRefs: [{{name: gw, sectionName: http}}]
              rules:
              - backendRefs: [{ref}]
            """,
        )
        + extra
    )


@pytest.mark.parametrize(
    ("ref", "host"),
    [
        ("{name: payments, port: 8080}", "payments.default.svc.cluster.local"),
        ('{group: "", kind: Service, name: payments, namespace: apps, port: 8080}', "payments.apps.svc.cluster.local"),
    ],
)
def test_a_backend_ref_without_group_and_kind_is_a_service(ref: str, host: str) -> None:
    result = compile_yaml(route_with_backend(ref))
    assert [str(p) for p in result.problems] == []
    assert conditions(result, ObjectRef("HTTPRoute", "default", "h"))["ResolvedRefs"] == ("True", "ResolvedRefs")
    assert result.snapshot is not None
    [service] = result.snapshot.routes[ObjectRef("HTTPRoute", "default", "h")].rules[0].backends
    assert service.backend is None
    assert (service.service_host, service.port) == (host, 8080)
    assert service.ref == ObjectRef("Service", host.split(".")[1], "payments")


@pytest.mark.parametrize(
    "ref",
    [
        "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: child}",  # kgateway route delegation
        "{group: multicluster.x-k8s.io, kind: ServiceImport, name: store, port: 8080}",
        "{group: inference.networking.x-k8s.io, kind: InferencePool, name: llm}",
    ],
)
def test_a_backend_ref_of_an_unmodelled_kind_is_valid_and_unresolved(ref: str) -> None:
    """Gateway API: the route is accepted, `ResolvedRefs=False` / `InvalidKind`, and no traffic goes there."""
    result = compile_yaml(route_with_backend(ref))
    assert [str(p) for p in result.problems] == []
    assert conditions(result, ObjectRef("HTTPRoute", "default", "h"))["ResolvedRefs"] == ("False", "InvalidKind")
    assert result.snapshot is not None
    rule = result.snapshot.routes[ObjectRef("HTTPRoute", "default", "h")].rules[0]
    assert rule.backends == () and len(rule.unresolved_backends) == 1


def test_a_service_backend_ref_needs_a_port() -> None:
    text = route_with_backend("{name: payments}")
    [problem] = compile_yaml(text).problems
    assert str(problem) == (
        f'{FILE}:{line_of(text, "name: payments")}: HTTPRoute/default/h: '
        'spec.rules[0].backendRefs[0].port: a Service backendRef needs a port (Service "default/payments")'
    )


def test_a_kind_less_backend_ref_still_names_a_backend_of_that_name() -> None:
    backend = doc(
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: Backend\n",
        """\
        metadata: {name: payments}
        spec: {type: Static, static: {hosts: [{host: pay.example.com, port: 443}]}}
        """,
    )
    [wb] = compiled(route_with_backend("{name: payments}", backend)).routes[ObjectRef("HTTPRoute", "default", "h")].rules[0].backends
    assert wb.backend is not None and wb.backend.ref == ObjectRef("Backend", "default", "payments")


def test_a_kgateway_policy_targeting_a_kind_we_do_not_model_is_valid_and_attached_nowhere() -> None:
    """kgateway's e2e data has TrafficPolicies targeting an XListenerSet: valid, Accepted=False, in force nowhere."""
    text = GATEWAY + doc(
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\n",
        """\
        metadata: {name: ls-policy}
        spec:
          targetRefs: [{group: gateway.networking.x-k8s.io, kind: XListenerSet, name: ls}]
          timeouts: {request: 5s}
        """,
    )
    result = compile_yaml(text)
    assert [str(p) for p in result.problems] == []
    assert conditions(result, ObjectRef("TrafficPolicy", "default", "ls-policy"))["Accepted"] == ("False", "InvalidKind")


def test_a_seed_policy_targeting_an_unknown_kind_is_still_a_problem() -> None:
    text = GATEWAY + doc(
        "apiVersion: policy.egressproxy.io/v1alpha1\nkind: DNSPolicy\n",
        """\
        metadata: {name: dns}
        spec:
          targetRefs: [{group: gateway.networking.x-k8s.io, kind: XListenerSet, name: ls}]
          minTTL: 5s
        """,
    )
    [problem] = compile_yaml(text).problems
    assert "a DNSPolicy cannot target a XListenerSet" in str(problem)
