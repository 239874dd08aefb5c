"""matching: listener selection (precedence, ports, route-awareness), HTTP rule precedence, TLS and L4 routes."""

from __future__ import annotations

import functools
import random
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
from egressproxy.snapshot import Gateway, Listener, Route, Snapshot


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


# --- the hostname index against a linear walk -----------------------------------------------------------------

INDEX_HOSTS = ("api.example.com", "a.b.example.com", "b.example.com", "example.com", "x.other.net", "other.net")
INDEX_PATTERNS = ("api.example.com", "*.example.com", "*.b.example.com", "b.example.com", "*.other.net", "example.com")
INDEX_MATCHES = (
    "{}",
    "{path: {type: PathPrefix, value: /v1}}",
    "{path: {type: PathPrefix, value: /v1/chat}}",
    "{path: {type: Exact, value: /v1/chat}}",
    '{path: {type: RegularExpression, value: "/v1/.*"}}',
    "{path: {type: PathPrefix, value: /v1}, method: POST}",
    "{headers: [{name: x-team, value: a}]}",
    '{queryParams: [{name: q, value: "1"}]}',
)
INDEX_REQUESTS = (
    ("GET", "/v1/chat", {}, {}),
    ("POST", "/v1/chat/x", {}, {}),
    ("GET", "/v1/models", {"x-team": "a"}, {}),
    ("GET", "/other", {}, {"q": ["1"]}),
    ("GET", "/", {}, {}),
)


def random_routes(rng: random.Random, count: int) -> list[str]:
    """`count` HTTPRoutes with random names, 0-2 hostnames of the pool and 1-3 rules of 1-2 random matches."""
    out = []
    for i in rng.sample(range(count * 3), count):
        hostnames = rng.sample(INDEX_PATTERNS, rng.choice((0, 1, 1, 2)))
        rules = ", ".join(
            "{matches: [" + ", ".join(rng.choice(INDEX_MATCHES) for _ in range(rng.randint(1, 2))) + "]}"
            for _ in range(rng.randint(1, 3))
        )
        host_line = f"hostnames: [{', '.join(repr(h) for h in hostnames)}]\n" if hostnames else ""
        out.append(route("HTTPRoute", f"r{i:03d}", f"parentRefs: [{{name: gw}}]\n{host_line}rules: [{rules}]\n"))
    return out


def linear_match(routes: tuple[Route, ...], host: str, method: str, path: str, headers: dict[str, str],
                 query: dict[str, list[str]]) -> tuple[str, int] | None:
    """Gateway API precedence by brute force over every route: the most specific hostname a route names for the
    host, then the match's precedence, then `namespace/name`, rule order and match order."""
    best: tuple[tuple[int, ...], tuple[object, ...], tuple[str, int]] | None = None
    for r in routes:
        specificity = max((hostname_rank(h, host) for h in r.hostnames), default=(0, 0)) if r.hostnames else (1, 0)
        if specificity == (0, 0):
            continue
        for rule in r.rules:
            for order, m in enumerate(rule.matches):
                if not m.matches(method, path, headers, query):
                    continue
                rank = (*specificity, *m.precedence())
                tie = (r.ref.namespace, r.ref.name, rule.index, order)
                if best is None or rank > best[0] or (rank == best[0] and tie < best[1]):
                    best = (rank, tie, (r.ref.name, rule.index))
    return best[2] if best is not None else None


def hostname_rank(pattern: str, host: str) -> tuple[int, int]:
    """(3, 0) for an exact name, (2, suffix length) for a wildcard that matches, (0, 0) for none."""
    if pattern == host:
        return (3, 0)
    if pattern.startswith("*.") and host.endswith(pattern[1:]):
        return (2, len(pattern))
    return (0, 0)


@pytest.mark.parametrize("seed", range(6))
def test_the_hostname_index_decides_as_a_linear_walk_over_every_route(seed: int) -> None:
    """The table's buckets (exact, longest wildcard suffix, no hostname) give the rule a brute-force walk over
    every route in Gateway API precedence gives, for every host and request of a random route set."""
    rng = random.Random(seed)
    listener = http_listener(*random_routes(rng, 40))
    routes = listener.http_routes.routes
    for host in INDEX_HOSTS:
        for method, path, headers, query in INDEX_REQUESTS:
            expected = linear_match(routes, host, method, path, headers, query)
            assert matched(listener, host, method, path, headers, query) == expected, (seed, host, method, path)


def test_a_lookup_walks_the_host_s_buckets_not_the_routes() -> None:
    """With 2,000 named routes a lookup visits at most the exact bucket, one per parent suffix and the
    hostname-less one: the last route is found as the first, and a miss sees none of them."""
    routes = [route("HTTPRoute", f"r{i:04d}", f"parentRefs: [{{name: gw}}]\nhostnames: [svc-{i}.example.com]\n")
              for i in range(2000)]
    routes.append(route("HTTPRoute", "wild", "parentRefs: [{name: gw}]\nhostnames: ['*.zone.example.com']\n"))
    table = http_listener(*routes).http_routes
    assert len(table.exact) == 2000 and set(table.wildcard) == {"zone.example.com"}
    assert [b.routes[0].ref.name for b in table.buckets("svc-1999.example.com")] == ["r1999"]
    assert [b.routes[0].ref.name for b in table.buckets("a.b.zone.example.com")] == ["wild"]
    assert list(table.buckets("svc-2000.example.com")) == []


def test_decided_by_path_is_false_only_where_a_bucket_of_the_host_reads_more_than_the_path() -> None:
    listener = http_listener(
        route("HTTPRoute", "plain", "parentRefs: [{name: gw}]\nhostnames: [plain.example.com]\n"
              "rules: [{matches: [{path: {value: /v1}}]}, {}]\n"),
        route("HTTPRoute", "method", "parentRefs: [{name: gw}]\nhostnames: [method.example.com]\n"
              "rules: [{matches: [{method: POST}]}]\n"),
        route("HTTPRoute", "wild", "parentRefs: [{name: gw}]\nhostnames: ['*.team.example.com']\n"
              "rules: [{matches: [{headers: [{name: x-team, value: a}]}]}]\n"),
        route("HTTPRoute", "query", "parentRefs: [{name: gw}]\nhostnames: [q.example.com]\n"
              "rules: [{matches: [{queryParams: [{name: q, value: '1'}]}]}]\n"),
    )
    table = listener.http_routes
    assert table.decided_by_path("plain.example.com")
    assert table.decided_by_path("unrouted.example.com")  # no bucket at all: always unmatched
    assert not table.decided_by_path("method.example.com")
    assert not table.decided_by_path("a.team.example.com")  # through the wildcard bucket
    assert not table.decided_by_path("q.example.com")
    catch_all = http_listener(route("HTTPRoute", "any", "parentRefs: [{name: gw}]\nrules: [{matches: [{method: GET}]}]\n"))
    assert not catch_all.http_routes.decided_by_path("plain.example.com")  # the hostname-less bucket reads the method


def test_decided_by_host_only_where_no_bucket_of_the_host_reads_the_path_either() -> None:
    listener = http_listener(
        route("HTTPRoute", "hosts", "parentRefs: [{name: gw}]\nhostnames: [hosts.example.com, '*.w.example.com']\n"
              "rules: [{}, {matches: [{path: {type: PathPrefix, value: /}}]}]\n"),
        route("HTTPRoute", "paths", "parentRefs: [{name: gw}]\nhostnames: [paths.example.com]\n"
              "rules: [{matches: [{path: {value: /v1}}]}, {}]\n"),
        route("HTTPRoute", "exact", "parentRefs: [{name: gw}]\nhostnames: [x.w.example.com]\n"
              "rules: [{matches: [{path: {type: Exact, value: /}}]}]\n"),
    )
    table = listener.http_routes
    assert table.decided_by_host("hosts.example.com") and table.decided_by_host("a.w.example.com")
    assert table.decided_by_host("unrouted.example.com")
    assert not table.decided_by_host("paths.example.com") and table.decided_by_path("paths.example.com")
    assert not table.decided_by_host("x.w.example.com")  # its exact bucket has an Exact path, the wildcard none


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
