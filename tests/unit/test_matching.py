"""matching: listener selection (precedence, ports, route-awareness), HTTP rule precedence, TLS and L4 routes."""

from __future__ import annotations

import functools
import textwrap

import pytest

from egressproxy.ca import create_ca, secret_manifest
from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_text
from egressproxy.config.problems import ObjectRef
from egressproxy.matching import (
    Carries,
    decide_route,
    decide_unmatched,
    match_http,
    match_l4,
    match_l4_entry,
    match_tls,
    select_listener,
)
from egressproxy.snapshot import Gateway, Listener, Snapshot


@functools.cache
def ca_yaml() -> str:
    cert, key = create_ca("matching-test")
    return secret_manifest("egress-ca", cert, key)


def compiled(text: str) -> Snapshot:
    loaded = load_text(ca_yaml() + "---\n" + textwrap.dedent(text), "cfg.yaml")
    assert [str(p) for p in loaded.problems] == []
    result = compile_config(loaded.resources)
    assert [str(p) for p in result.problems] == []
    assert result.snapshot is not None
    return result.snapshot


TERMINATE = "    tls: {mode: Terminate, caCertRef: {name: egress-ca}}\n"


def gateway(*listeners: str, policy: str = "deny-all") -> str:
    """An EgressGateway from listener lines such as 'name protocol [port] [Terminate|Passthrough]'."""
    out = f"apiVersion: clrk.apoxy.dev/v1alpha1\nkind: EgressGateway\nmetadata: {{name: gw}}\nspec:\n  defaultPolicy: {policy}\n  listeners:\n"
    for spec in listeners:
        name, protocol, *rest = spec.split()
        out += f"  - name: {name}\n    protocol: {protocol}\n"
        for extra in rest:
            if extra.isdigit():
                out += f"    port: {extra}\n"
            elif extra == "Terminate":
                out += TERMINATE
            else:
                out += "    tls: {mode: Passthrough}\n"
    return out


def route(kind: str, name: str, body: str) -> str:
    version = {
        "HTTPRoute": "gateway.networking.k8s.io/v1",
        "GRPCRoute": "gateway.networking.k8s.io/v1",
        "TLSRoute": "gateway.networking.k8s.io/v1alpha2",
        "TCPRoute": "gateway.networking.k8s.io/v1alpha2",
        "UDPRoute": "gateway.networking.k8s.io/v1alpha2",
        "EgressL4Route": "clrk.apoxy.dev/v1alpha1",
    }[kind]
    return f"---\napiVersion: {version}\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n" + textwrap.indent(
        textwrap.dedent(body), "  "
    )


def chosen(gw: Gateway, carries: Carries, port: int | None, host: str | None, ip: str | None = None) -> str | None:
    listener = select_listener(gw, carries, port, host, ip).listener
    return listener.name if listener is not None else None


# --- listener selection ---------------------------------------------------------------------------------------

ALL_LISTENERS = gateway(
    "tcp TCP", "pass TLS Passthrough", "http HTTP", "https HTTPS Terminate", "tlsterm TLS Terminate", "udp UDP"
)


def test_precedence_tls_terminate_https_http_passthrough_tcp() -> None:
    gw = compiled(ALL_LISTENERS).gateway
    choice = select_listener(gw, Carries.TLS, 443, "a.example", None)
    assert [l.name for l in choice.candidates] == ["tlsterm", "https", "pass", "tcp"]
    assert choice.listener is not None and choice.listener.name == "tlsterm" and choice.route_hint is None
    assert chosen(gw, Carries.HTTP, 80, "a.example") == "http"
    assert chosen(gw, Carries.TCP, 5432, None, "10.0.0.1") == "tcp"
    assert chosen(gw, Carries.UDP, 53, None, "10.0.0.1") == "udp"


def test_listener_precedence_order_without_the_top_ones() -> None:
    gw = compiled(gateway("tcp TCP", "pass TLS Passthrough", "https HTTPS Terminate")).gateway
    assert chosen(gw, Carries.TLS, 443, "a.example") == "https"
    gw = compiled(gateway("tcp TCP", "pass TLS Passthrough")).gateway
    assert chosen(gw, Carries.TLS, 443, "a.example") == "pass"
    gw = compiled(gateway("tcp TCP")).gateway
    assert chosen(gw, Carries.TLS, 443, "a.example") == "tcp"


def test_no_candidate_means_no_listener() -> None:
    gw = compiled(gateway("https HTTPS Terminate")).gateway
    assert select_listener(gw, Carries.HTTP, 80, "a.example", None).listener is None
    assert select_listener(gw, Carries.TCP, 22, None, "10.0.0.1").listener is None
    assert select_listener(gw, Carries.UDP, 53, None, "10.0.0.1").listener is None


def test_an_intercepting_http_listener_takes_tls_not_plain_http() -> None:
    gw = compiled(gateway("mitm HTTP Terminate", "tcp TCP")).gateway
    assert chosen(gw, Carries.TLS, 443, "a.example") == "mitm"
    assert chosen(gw, Carries.HTTP, 80, "a.example") == "tcp"


def test_a_listener_with_a_matching_port_beats_one_without() -> None:
    gw = compiled(gateway("tlsterm TLS Terminate", "tcp443 TCP 443", "https8443 HTTPS 8443 Terminate")).gateway
    assert chosen(gw, Carries.TLS, 443, "a.example") == "tcp443"
    assert chosen(gw, Carries.TLS, 8443, "a.example") == "https8443"
    assert chosen(gw, Carries.TLS, 9443, "a.example") == "tlsterm"  # port-bound listeners elsewhere never match


def test_passthrough_keeps_pinned_hosts_while_terminate_takes_the_rest() -> None:
    text = gateway("mitm TLS Terminate", "pass TLS Passthrough") + route(
        "TLSRoute", "pinned", "parentRefs: [{name: gw, sectionName: pass}]\nhostnames: [pinned.example.com]\n"
    )
    gw = compiled(text).gateway
    choice = select_listener(gw, Carries.TLS, 443, "pinned.example.com", None)
    assert choice.listener is not None and choice.listener.name == "pass"
    assert choice.route_hint is not None and choice.route_hint.ref.name == "pinned"
    assert chosen(gw, Carries.TLS, 443, "api.openai.com") == "mitm"
    assert chosen(gw, Carries.TLS, 443, "sub.pinned.example.com") == "mitm"


def test_route_awareness_prefers_the_highest_precedence_candidate_with_a_route() -> None:
    text = (
        gateway("mitm TLS Terminate", "pass TLS Passthrough", "tcp TCP")
        + route("HTTPRoute", "inspect", "parentRefs: [{name: gw, sectionName: mitm}]\nhostnames: [api.example.com]\n")
        + route("TLSRoute", "pinned", "parentRefs: [{name: gw}]\nhostnames: ['*.example.com']\n")
        + route("TCPRoute", "raw", "parentRefs: [{name: gw}]\n")
    )
    gw = compiled(text).gateway
    assert chosen(gw, Carries.TLS, 443, "api.example.com") == "mitm"  # Terminate has a route: it wins
    assert chosen(gw, Carries.TLS, 443, "bank.example.com") == "pass"
    assert chosen(gw, Carries.TLS, 443, "other.org") == "tcp"  # the TCPRoute matches every destination


def test_http_listener_route_awareness_by_hostname() -> None:
    text = (
        gateway("http HTTP", "tcp TCP")
        + route("HTTPRoute", "web", "parentRefs: [{name: gw}]\nhostnames: [web.example.com]\n")
        + route("EgressL4Route", "db", "parentRefs: [{name: gw}]\nrules: [{matches: [{destinationHostnames: [db.example.com]}]}]\n")
    )
    gw = compiled(text).gateway
    assert chosen(gw, Carries.HTTP, 80, "web.example.com") == "http"
    assert chosen(gw, Carries.HTTP, 80, "db.example.com") == "tcp"
    assert chosen(gw, Carries.HTTP, 80, "nobody.example.com") == "http"  # no route anywhere: the first candidate


# --- HTTP rule precedence -------------------------------------------------------------------------------------


def http_listener(*routes: str) -> Listener:
    gw = compiled(gateway("https HTTPS Terminate") + "".join(routes)).gateway
    return gw.listeners[0]


def matched(listener: Listener, host: str, method: str = "GET", path: str = "/", headers: dict[str, str] | None = None,
            query: dict[str, list[str]] | None = None) -> tuple[str, int] | None:
    m = match_http(listener, host, method, path, headers or {}, query or {})
    return (m.route.ref.name, m.rule_index) if m is not None else None


RULES = route(
    "HTTPRoute",
    "r",
    """\
    parentRefs: [{name: gw}]
    hostnames: [api.example.com]
    rules:
    - matches: [{path: {type: RegularExpression, value: "/v1/.*"}}]
    - matches: [{path: {type: PathPrefix, value: /v1}}]
    - matches: [{path: {type: PathPrefix, value: /v1/chat}}]
    - matches: [{path: {type: Exact, value: /v1/chat/completions}}]
    - matches: [{path: {type: PathPrefix, value: /v1/chat}, method: POST}]
    - matches: [{path: {type: PathPrefix, value: /v1/chat}, method: POST, headers: [{name: X-Team, value: a}]}]
    - matches: [{path: {type: PathPrefix, value: /v1/chat}, method: POST, headers: [{name: x-team, value: a}],
                 queryParams: [{name: stream, value: "true"}]}]
    - matches: [{path: {type: PathPrefix, value: /v1/chat}}]
    """,
)


@pytest.mark.parametrize(
    "method, path, headers, query, rule",
    [
        ("GET", "/v1/chat/completions", {}, {}, 3),  # Exact beats every prefix
        ("GET", "/v1/models", {}, {}, 1),  # the longest matching prefix beats the regex
        ("GET", "/v1/chat/x", {}, {}, 2),  # longest prefix; rule 7 ties and comes later
        ("POST", "/v1/chat/x", {}, {}, 4),  # a method match beats none
        ("POST", "/v1/chat/x", {"x-team": "a"}, {}, 5),  # more header matches
        ("POST", "/v1/chat/x", {"x-team": "a"}, {"stream": ["true"]}, 6),  # more query matches
        ("POST", "/v1/chat/x?stream=true", {"x-team": "a"}, {"stream": ["true"]}, 6),  # query string cut off
        ("POST", "/v1/chat/x", {"x-team": "b"}, {}, 4),
        ("GET", "/v1x", {}, {}, None),  # segment-aware: /v1 is not a prefix of /v1x, and the regex needs /v1/
        ("GET", "/v2", {}, {}, None),  # the host matches the route but no rule: unmatched
    ],
)
def test_rule_precedence(method: str, path: str, headers: dict[str, str], query: dict[str, list[str]], rule: int | None) -> None:
    result = matched(http_listener(RULES), "api.example.com", method, path, headers, query)
    assert result == (("r", rule) if rule is not None else None)


def test_hostname_specificity_beats_rule_specificity() -> None:
    listener = http_listener(
        route("HTTPRoute", "exact", "parentRefs: [{name: gw}]\nhostnames: [api.example.com]\nrules: [{matches: [{path: {value: /}}]}]\n"),
        route("HTTPRoute", "wild", "parentRefs: [{name: gw}]\nhostnames: ['*.example.com']\nrules: [{matches: [{path: {type: Exact, value: /x}}]}]\n"),
        route("HTTPRoute", "any", "parentRefs: [{name: gw}]\nrules: [{matches: [{path: {type: Exact, value: /y}}]}]\n"),
    )
    assert matched(listener, "api.example.com", path="/x") == ("exact", 0)
    assert matched(listener, "www.example.com", path="/x") == ("wild", 0)
    assert matched(listener, "www.example.com", path="/z") is None
    assert matched(listener, "www.example.com", path="/y") == ("any", 0)  # falls through to a less specific route
    assert matched(listener, "example.com", path="/x") is None  # a wildcard never matches its apex


def test_ties_across_routes_go_to_namespace_name_order() -> None:
    listener = http_listener(
        route("HTTPRoute", "b", "parentRefs: [{name: gw}]\n"),
        route("HTTPRoute", "a", "parentRefs: [{name: gw}]\n"),
    )
    assert matched(listener, "x.example") == ("a", 0)


def test_grpc_route_method_matches() -> None:
    listener = http_listener(
        route(
            "GRPCRoute",
            "g",
            """\
            parentRefs: [{name: gw}]
            rules:
            - matches: [{method: {service: pkg.Svc, method: Get}}]
            - matches: [{method: {service: pkg.Svc}}]
            - matches: [{method: {method: Ping}}]
            """,
        )
    )
    assert matched(listener, "grpc.example", "POST", "/pkg.Svc/Get") == ("g", 0)
    assert matched(listener, "grpc.example", "POST", "/pkg.Svc/List") == ("g", 1)
    assert matched(listener, "grpc.example", "POST", "/other.Svc/Ping") == ("g", 2)
    assert matched(listener, "grpc.example", "POST", "/other.Svc/Get") is None


# --- TLS and L4 ---------------------------------------------------------------------------------------------


def test_match_tls_most_specific_hostname() -> None:
    text = (
        gateway("pass TLS Passthrough")
        + route("TLSRoute", "wild", "parentRefs: [{name: gw}]\nhostnames: ['*.example.com']\n")
        + route("TLSRoute", "exact", "parentRefs: [{name: gw}]\nhostnames: [bank.example.com]\n")
    )
    listener = compiled(text).gateway.listeners[0]
    assert (r := match_tls(listener, "bank.example.com")) is not None and r.ref.name == "exact"
    assert (r := match_tls(listener, "a.b.example.com")) is not None and r.ref.name == "wild"
    assert match_tls(listener, "example.com") is None
    assert match_tls(listener, None) is None


def test_match_l4_by_cidr_hostname_port_and_protocol() -> None:
    text = gateway("tcp TCP", "udp UDP") + route(
        "EgressL4Route",
        "l4",
        """\
        parentRefs: [{name: gw}]
        rules:
        - matches: [{destinationCIDRs: [10.0.0.0/8], ports: [{port: 5432}]}]
        - matches: [{destinationHostnames: ['*.cache.example'], ports: [{startPort: 6379, endPort: 6380}]}]
        - matches: [{destinationCIDRs: [192.0.2.0/24], protocol: UDP}]
        """,
    )
    gw = compiled(text).gateway
    tcp, udp = gw.listeners
    assert match_l4(tcp, None, "10.1.1.1", 5432, "TCP") is not None
    assert match_l4(tcp, None, "10.1.1.1", 5433, "TCP") is None
    assert match_l4(tcp, None, "11.1.1.1", 5432, "TCP") is None
    entry = match_l4_entry(tcp, "redis.cache.example", "172.16.0.1", 6380, "TCP")
    assert entry is not None and entry.rule.index == 1
    assert match_l4(tcp, "cache.example", "172.16.0.1", 6380, "TCP") is None
    assert match_l4(udp, None, "192.0.2.9", 53, "UDP") is not None
    assert match_l4(tcp, None, "192.0.2.9", 53, "TCP") is None  # protocol UDP only


def test_tcp_route_matches_every_destination_of_its_listener() -> None:
    gw = compiled(gateway("tcp TCP") + route("TCPRoute", "raw", "parentRefs: [{name: gw}]\n")).gateway
    assert match_l4(gw.listeners[0], None, "203.0.113.1", 22, "TCP") is not None


# --- verdicts -------------------------------------------------------------------------------------------------


def test_decide_unmatched_follows_default_policy() -> None:
    deny = decide_unmatched(compiled(gateway("tcp TCP")).gateway)
    assert (deny.allowed, deny.reason, deny.policy, deny.status_code) == (False, "no-route", "EgressGateway/default/gw", 403)
    allow = decide_unmatched(compiled(gateway("tcp TCP", policy="allow-all")).gateway)
    assert allow.allowed and allow.policy == "EgressGateway/default/gw"


def test_decide_route_honours_an_egress_deny_policy() -> None:
    text = (
        gateway("https HTTPS Terminate")
        + route("HTTPRoute", "r", "parentRefs: [{name: gw}]\n")
        + "---\napiVersion: clrk.apoxy.dev/v1alpha1\nkind: EgressDenyPolicy\nmetadata: {name: no}\nspec:\n"
        "  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}\n"
        "  denyResponse: {statusCode: 451, message: blocked}\n"
    )
    snap = compiled(text)
    route_ = snap.routes[ObjectRef("HTTPRoute", "default", "r")]
    verdict = decide_route(route_)
    assert (verdict.allowed, verdict.reason, verdict.policy, verdict.status_code, verdict.message) == (
        False,
        "route-denied",
        "EgressDenyPolicy/default/no",
        451,
        "blocked",
    )
    other = compiled(gateway("https HTTPS Terminate") + route("HTTPRoute", "r", "parentRefs: [{name: gw}]\n"))
    assert decide_route(other.routes[ObjectRef("HTTPRoute", "default", "r")]).allowed
