"""snapshot: route table indexing, immutable records, policy merging, secret redaction in dumps."""

from __future__ import annotations

import dataclasses
import functools
import json
import textwrap
from types import MappingProxyType

import pytest

from egressproxy.ca import create_ca, secret_manifest
from egressproxy.compiler import build_http_table, compile_config
from egressproxy.config.loader import load_text
from egressproxy.config.problems import ObjectRef
from egressproxy.hostnames import canonical_host
from egressproxy.snapshot import (
    REDACTED,
    AttachedPolicy,
    HttpRouteMatch,
    L4Match,
    PathMatch,
    PolicyIndex,
    Route,
    RouteTable,
    Rule,
    SecretData,
    Snapshot,
    ValueMatch,
    deep_merge,
    freeze,
)

GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: gw}
spec:
  defaultPolicy: deny-all
  listeners:
  - name: https
    protocol: HTTPS
    tls: {mode: Terminate, caCertRef: {name: egress-ca}}
"""


@functools.cache
def ca_yaml() -> str:
    cert, key = create_ca("snapshot-test")
    return secret_manifest("egress-ca", cert, key)


def compiled(text: str) -> Snapshot:
    loaded = load_text(ca_yaml() + "---\n" + textwrap.dedent(text), "cfg.yaml")
    assert [str(p) for p in loaded.problems] == []
    result = compile_config(loaded.resources)
    assert [str(p) for p in result.problems] == []
    assert result.snapshot is not None
    return result.snapshot


def http_route(name: str, hostnames: list[str]) -> str:
    return (
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        f"metadata: {{name: {name}}}\nspec: {{parentRefs: [{{name: gw}}], hostnames: {json.dumps(hostnames)}}}\n"
    )


def route(name: str, *hostnames: str) -> Route:
    return Route("HTTPRoute", ObjectRef("HTTPRoute", "default", name), hostnames, (Rule(0, matches=(HttpRouteMatch(),)),))


# --- route tables -----------------------------------------------------------------------------------------------


def test_route_table_is_indexed_by_exact_name_wildcard_suffix_and_no_hostname() -> None:
    snap = compiled(
        GATEWAY
        + http_route("exact", ["api.example.com"])
        + http_route("wild", ["*.example.com"])
        + http_route("deep", ["*.eu.example.com"])
        + http_route("none", [])
    )
    table = snap.gateway.listeners[0].http_routes
    assert {k: [r.name for r in b.routes] for k, b in table.exact.items()} == {"api.example.com": ["default/exact"]}
    assert {k: [r.name for r in b.routes] for k, b in table.wildcard.items()} == {
        "example.com": ["default/wild"],
        "eu.example.com": ["default/deep"],
    }
    assert [r.name for r in table.any.routes] == ["default/none"]


@pytest.mark.parametrize(
    "host, expected",
    [
        ("api.example.com", ["exact", "wild", "none"]),
        ("x.eu.example.com", ["deep", "wild", "none"]),
        ("a.b.c.eu.example.com", ["deep", "wild", "none"]),  # any depth
        ("eu.example.com", ["wild", "none"]),  # *.eu.example.com never matches its apex
        ("example.com", ["none"]),  # nor does *.example.com
        ("other.org", ["none"]),
    ],
)
def test_lookup_is_most_specific_first(host: str, expected: list[str]) -> None:
    table = build_http_table(
        [route("exact", "api.example.com"), route("wild", "*.example.com"), route("deep", "*.eu.example.com"), route("none")]
    )
    assert [r.ref.name for r in table.lookup(host)] == expected


@pytest.mark.parametrize("spelling", ["API.Example.COM", "api.example.com.", "Api.Example.Com."])
def test_lookup_of_canonicalised_spellings(spelling: str) -> None:
    table = build_http_table([route("exact", "api.example.com"), route("wild", "*.example.com")])
    assert [r.ref.name for r in table.lookup(canonical_host(spelling))] == ["exact", "wild"]


def test_lookup_walks_buckets_not_routes() -> None:
    """With thousands of routes a lookup visits only the host's own keys: exact, each parent suffix, and 'any'."""
    routes = [route(f"r{i}", f"host{i}.example.com") for i in range(5000)] + [route("wild", "*.example.com")]
    table = build_http_table(routes)
    assert len(table.exact) == 5000
    buckets = list(table.buckets("host42.example.com"))
    assert [[r.ref.name for r in b.routes] for b in buckets] == [["r42"], ["wild"]]
    assert list(table.buckets(None)) == []


def test_a_route_with_exact_and_wildcard_hostnames_is_listed_once() -> None:
    table = build_http_table([route("both", "api.example.com", "*.example.com")])
    assert [r.ref.name for r in table.lookup("api.example.com")] == ["both"]
    assert table.first("zzz.example.com") is not None and table.first("example.org") is None


def test_route_table_entries_are_presorted_by_rule_precedence() -> None:
    matches = (
        HttpRouteMatch(PathMatch("PathPrefix", "")),
        HttpRouteMatch(PathMatch("Exact", "/a")),
        HttpRouteMatch(PathMatch("PathPrefix", "/abc")),
        HttpRouteMatch(PathMatch("PathPrefix", "/abc"), method="GET"),
    )
    r = Route("HTTPRoute", ObjectRef("HTTPRoute", "default", "r"), (), (Rule(0, matches=matches),))
    entries = build_http_table([r]).any.entries
    assert [e.match for e in entries] == [matches[1], matches[3], matches[2], matches[0]]


# --- matches ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix, path, ok",
    [
        ("/foo", "/foo", True),
        ("/foo", "/foo/", True),
        ("/foo", "/foo/bar", True),
        ("/foo", "/foobar", False),
        ("/foo", "/fo", False),
        ("", "/anything", True),
    ],
)
def test_path_prefix_is_segment_aware(prefix: str, path: str, ok: bool) -> None:
    assert PathMatch("PathPrefix", prefix).matches(path) is ok


def test_exact_and_regex_paths() -> None:
    import re

    assert PathMatch("Exact", "/a").matches("/a") and not PathMatch("Exact", "/a").matches("/a/")
    regex = PathMatch("RegularExpression", "/v[0-9]+/.*", re.compile("/v[0-9]+/.*"))
    assert regex.matches("/v1/chat") and not regex.matches("/x/v1/chat")


def test_value_match_and_l4_match() -> None:
    assert ValueMatch("x", "Exact", "a").matches("a") and not ValueMatch("x", "Exact", "a").matches(None)
    import ipaddress

    m = L4Match(cidrs=(ipaddress.ip_network("10.0.0.0/8"),), ports=((80, 80), (8000, 8100)), protocol="TCP")
    assert m.matches_address("10.1.2.3", 8050, "TCP")
    assert not m.matches_address("10.1.2.3", 8050, "UDP")
    assert not m.matches_address("11.1.2.3", 80, "TCP")
    assert not m.matches_address(None, 80, "TCP")
    assert not m.matches_address("10.1.2.3", 443, "TCP")
    assert L4Match().matches_address(None, None, "UDP")


# --- immutability and secrets ---------------------------------------------------------------------------------


def test_records_are_frozen() -> None:
    snap = compiled(GATEWAY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.gateway.default_policy = "allow-all"  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.backends[ObjectRef("Backend", "default", "x")] = None  # type: ignore[index]


def test_secret_data_never_shows_its_values() -> None:
    secret = SecretData({"token": b"hunter2-value", "user": b"bob\n"})
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    assert repr(secret) == "SecretData(keys=['token', 'user'])"
    assert secret["token"] == b"hunter2-value" and secret.text("user") == "bob"
    assert secret.to_dump() == {"token": REDACTED, "user": REDACTED}
    with pytest.raises(AttributeError):
        secret._data = {}  # type: ignore[misc]
    assert secret == SecretData({"user": b"bob\n", "token": b"hunter2-value"})


def test_to_dump_has_no_secret_value() -> None:
    text = GATEWAY.replace("  listeners:", "  otlp:\n    headers: {x-api-key: otlp-header-secret}\n  listeners:") + textwrap.dedent(
        """\
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: openai}
        stringData: {Authorization: sk-live-openai-secret}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: creds}
        stringData: {username: parent-user-name, password: parent-password-secret}
        ---
        apiVersion: gateway.kgateway.dev/v1alpha1
        kind: Backend
        metadata: {name: llm}
        spec:
          type: AI
          ai:
            priorityGroups:
            - providers:
              - name: a
                openai: {model: gpt-4o, authToken: {kind: SecretRef, secretRef: {name: openai}}}
              - name: b
                anthropic: {model: claude, authToken: {kind: Inline, inline: inline-anthropic-secret}}
        ---
        apiVersion: gateway.kgateway.dev/v1alpha1
        kind: Backend
        metadata: {name: parent}
        spec:
          type: Static
          static: {hosts: [{host: proxy.example, port: 3128}]}
          parent: {authSecretRef: {name: creds}}
        ---
        apiVersion: clrk.apoxy.dev/v1alpha1
        kind: CredentialInjectionPolicy
        metadata: {name: inject}
        spec:
          targetRefs: [{group: gateway.kgateway.dev, kind: Backend, name: llm}]
          secretRef: {name: openai}
          secretKey: Authorization
          target: Header
          headerName: authorization
        """
    )
    snap = compiled(text)
    dumped = json.dumps(snap.to_dump())
    for secret in (
        "otlp-header-secret",
        "sk-live-openai-secret",
        "parent-user-name",
        "parent-password-secret",
        "inline-anthropic-secret",
        "BEGIN PRIVATE KEY",
        "BEGIN CERTIFICATE",
    ):
        assert secret not in dumped, secret
    assert REDACTED in dumped
    dump = snap.to_dump()
    assert dump["secrets"]["Secret/default/openai"] == {"Authorization": REDACTED}
    assert dump["gateway"]["otlp"]["headers"] == {"x-api-key": REDACTED}
    assert dump["gateway"]["listeners"][0]["ca"]["keyPem"] == REDACTED
    assert dump["backends"]["Backend/default/parent"]["parent"]["password"] == REDACTED


def test_dump_scrubs_a_secret_value_wherever_it_appears() -> None:
    """Defence in depth: a secret value copied into a non-secret field is still redacted."""
    text = GATEWAY + textwrap.dedent(
        """\
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: s}
        stringData: {k: leaked-into-a-body}
        ---
        apiVersion: gateway.kgateway.dev/v1alpha1
        kind: DirectResponse
        metadata: {name: d}
        spec: {status: 200, body: leaked-into-a-body}
        """
    )
    dump = compiled(text).to_dump()
    assert dump["directResponses"]["DirectResponse/default/d"]["body"] == REDACTED


# --- policy merge -----------------------------------------------------------------------------------------------


def test_deep_merge_merges_objects_and_replaces_lists() -> None:
    base = {"a": 1, "nested": {"x": 1, "y": [1, 2]}, "list": [1]}
    override = {"nested": {"y": [3]}, "list": [2, 3], "b": 2}
    assert deep_merge(base, override) == {"a": 1, "b": 2, "nested": {"x": 1, "y": [3]}, "list": [2, 3]}
    assert base == {"a": 1, "nested": {"x": 1, "y": [1, 2]}, "list": [1]}


def test_policy_index_effective_is_most_specific_field_by_field() -> None:
    route = ObjectRef("HTTPRoute", "default", "r")
    backend = ObjectRef("Backend", "default", "b")
    gw = AttachedPolicy(ObjectRef("P", "default", "gw"), freeze({"a": "gw", "b": "gw", "c": {"x": 1, "y": 1}}), "gateway")
    be = AttachedPolicy(ObjectRef("P", "default", "be"), freeze({"b": "be", "c": {"y": 2}}), "backend")
    rt = AttachedPolicy(ObjectRef("P", "default", "rt"), freeze({"c": {"x": 3}, "l": [1]}), "route")
    index = PolicyIndex(
        MappingProxyType(
            {("P", "gateway", None): (gw,), ("P", "backend", backend): (be,), ("P", "route", route): (rt,)}
        )
    )
    assert index.effective("P", route, backend) == {"a": "gw", "b": "be", "c": {"x": 3, "y": 2}, "l": [1]}
    assert index.effective("P", backend=backend) == {"a": "gw", "b": "be", "c": {"x": 1, "y": 2}}
    assert index.effective("P") == {"a": "gw", "b": "gw", "c": {"x": 1, "y": 1}}
    assert index.effective("Other", route, backend) == {}
    mine = index.effective("P", route, backend)
    mine["c"]["x"] = 99
    assert index.effective("P", route, backend)["c"]["x"] == 3  # callers get a fresh copy


def test_several_policies_at_one_scope_first_by_name_wins() -> None:
    first = AttachedPolicy(ObjectRef("P", "default", "a"), freeze({"v": "a"}), "gateway")
    second = AttachedPolicy(ObjectRef("P", "default", "b"), freeze({"v": "b", "w": "b"}), "gateway")
    index = PolicyIndex(MappingProxyType({("P", "gateway", None): (first, second)}))
    assert index.effective("P") == {"v": "a", "w": "b"}


def test_empty_route_table() -> None:
    assert RouteTable().lookup("a.example") == ()
