"""Fuzzing the route matcher (egressproxy/matching.py, issue 14 item 8) against a model of Gateway API hostname
precedence: random HTTPRoutes with exact and wildcard hostnames (or none) on one listener, compiled by the real
compiler, and random hosts asked of `match_http`.

The model: a route naming the host exactly wins; else the route whose wildcard has the longest suffix of the
host (`*.b.example.com` before `*.example.com`, never `example.com` itself); else a route without hostnames;
ties go to route order (`namespace/name`). An exact-host route never takes another host.
"""

from __future__ import annotations

import functools
import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from egressproxy.ca import create_ca, secret_manifest
from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_text
from egressproxy.hostnames import canonical_host, wildcard_matches
from egressproxy.matching import match_http
from egressproxy.snapshot import Snapshot

FUZZ = settings(max_examples=200, deadline=None)

NAMES = st.lists(st.sampled_from(["a", "b", "api", "example", "com"]), min_size=1, max_size=4).map(".".join)
PATTERNS = st.one_of(NAMES, NAMES.map(lambda n: "*." + n))
ROUTES = st.lists(st.lists(PATTERNS, max_size=3, unique=True), min_size=1, max_size=5)


@functools.cache
def ca_yaml() -> str:
    cert, key = create_ca("fuzz-matching")
    return secret_manifest("egress-ca", cert, key)


def snapshot(routes: list[list[str]]) -> Snapshot:
    docs = [
        ca_yaml(),
        "apiVersion: clrk.apoxy.dev/v1alpha1\nkind: EgressGateway\nmetadata: {name: gw}\n"
        "spec:\n  defaultPolicy: deny-all\n  listeners:\n  - {name: http, protocol: HTTP}\n",
    ]
    for i, hostnames in enumerate(routes):
        names = f"\n  hostnames: [{', '.join(repr(h) for h in hostnames)}]" if hostnames else ""
        docs.append(textwrap.dedent(f"""\
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {{name: r{i}}}
            spec:
              parentRefs: [{{name: gw}}]""") + names + "\n")
    loaded = load_text("---\n".join(docs), "fuzz.yaml")
    assert [str(p) for p in loaded.problems] == []
    result = compile_config(loaded.resources)
    assert [str(p) for p in result.problems] == []
    assert result.snapshot is not None
    return result.snapshot


def expected(routes: list[list[str]], host: str) -> str | None:
    """The model's winner for `host`: route name, or None (unmatched)."""
    def rank(hostnames: list[str]) -> int | None:
        if not hostnames:
            return 0
        if host in hostnames:
            return 10_000
        suffixes = [len(p) for p in hostnames if p.startswith("*.") and wildcard_matches(p, host)]
        return max(suffixes) if suffixes else None

    ranked = [(rank(h), f"r{i}") for i, h in enumerate(routes)]
    matching = [(r, name) for r, name in ranked if r is not None]
    if not matching:
        return None
    best = max(r for r, _ in matching)
    return min(name for r, name in matching if r == best)


@FUZZ
@given(ROUTES, st.lists(NAMES, min_size=1, max_size=6))
def test_the_route_for_a_host_is_the_gateway_api_winner(routes: list[list[str]], hosts: list[str]) -> None:
    snap = snapshot(routes)
    listener = snap.gateway.listeners[0]
    for host in hosts:
        got = match_http(listener, canonical_host(host), "GET", "/x?y=1", {}, {})
        name = got.route.ref.name if got is not None else None
        assert name == expected(routes, host), (routes, host)
        if got is not None and got.route.hostnames and not any(p.startswith("*.") for p in got.route.hostnames):
            assert host in got.route.hostnames  # an exact-host route never takes another host
