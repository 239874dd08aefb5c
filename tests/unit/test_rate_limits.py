"""RateLimitPolicy: schema extensions, the compiled form, attachment, bucket keys, and no secret anywhere."""

from __future__ import annotations

import copy
import json
import textwrap

import pytest

from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_text
from egressproxy.config.problems import ObjectRef
from egressproxy.decisions import RequestView, decide_request
from egressproxy.flowrecord import FlowRecord, Identity
from egressproxy.rate_limits import EXECUTION_HEADER, RateLimit, bucket_key

PASSWORD = "s3cret-redis-pass"

GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: gw}
spec:
  listeners:
  - {name: http, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: gw}]
  hostnames: [api.example.com]
  rules:
  - filters:
    - {type: ExtensionRef, extensionRef: {group: clrk.apoxy.dev, kind: RateLimitPolicy, name: per-route}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other}
spec:
  parentRefs: [{name: gw}]
  hostnames: [other.example.com]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: per-route}
spec: {requests: 5, window: 1m, scope: PerRoute}
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: gateway-budget}
spec:
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: gw}]
  tokens: 1000
  window: 1h
  store:
    type: Redis
    redis: {address: "127.0.0.1:6390", passwordSecretRef: {name: redis}}
  failureMode: Deny
---
apiVersion: v1
kind: Secret
metadata: {name: redis}
stringData: {password: s3cret-redis-pass}
"""


def compiled(text: str = GATEWAY):  # type: ignore[no-untyped-def]
    loaded = load_text(textwrap.dedent(text), "cfg.yaml")
    assert [str(p) for p in loaded.problems] == []
    return compile_config(loaded.resources)


def problems(text: str) -> list[str]:
    loaded = load_text(textwrap.dedent(text), "cfg.yaml")
    if loaded.problems:
        return [str(p) for p in loaded.problems]
    return [str(p) for p in compile_config(loaded.resources).problems]


def view(host: str) -> RequestView:
    return RequestView(host, 80, "GET", "/", {}, {}, "http")


def test_each_policy_compiles_with_its_defaults_and_store() -> None:
    result = compiled()
    assert result.ok and result.snapshot is not None
    limits = result.snapshot.compiled.rate_limits
    per_route = limits[ObjectRef("RateLimitPolicy", "default", "per-route")]
    assert (per_route.requests, per_route.tokens, per_route.window, per_route.scope) == (5, None, 60.0, "PerRoute")
    assert (per_route.redis, per_route.fail_open, per_route.report_only) == (None, True, False)
    budget = limits[ObjectRef("RateLimitPolicy", "default", "gateway-budget")]
    assert (budget.tokens, budget.fail_open) == (1000, False)
    assert budget.redis is not None and (budget.redis.host, budget.redis.port, budget.redis.password) == (
        "127.0.0.1", 6390, PASSWORD
    )


def test_a_request_gets_every_policy_that_applies_most_specific_first() -> None:
    snapshot = compiled().snapshot
    assert snapshot is not None
    listener = snapshot.gateway.listener("http")
    assert listener is not None
    names = [limit.name for limit in decide_request(snapshot, listener, view("api.example.com")).rate_limits]
    assert names == ["RateLimitPolicy/default/per-route", "RateLimitPolicy/default/gateway-budget"]
    names = [limit.name for limit in decide_request(snapshot, listener, view("other.example.com")).rate_limits]
    assert names == ["RateLimitPolicy/default/gateway-budget"]


def test_a_policy_attached_twice_counts_once() -> None:
    text = GATEWAY.replace(
        "spec: {requests: 5, window: 1m, scope: PerRoute}",
        "spec:\n  requests: 5\n  window: 1m\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]",
    )
    snapshot = compiled(text).snapshot
    assert snapshot is not None
    listener = snapshot.gateway.listener("http")
    assert listener is not None
    names = [limit.name for limit in decide_request(snapshot, listener, view("api.example.com")).rate_limits]
    assert names.count("RateLimitPolicy/default/per-route") == 1


def test_the_redis_password_is_in_no_dump_repr_or_flow_copy() -> None:
    snapshot = compiled().snapshot
    assert snapshot is not None
    limit = snapshot.compiled.rate_limits[ObjectRef("RateLimitPolicy", "default", "gateway-budget")]
    assert PASSWORD not in json.dumps(snapshot.to_dump())
    assert PASSWORD not in repr(limit) and PASSWORD not in repr(snapshot.compiled)
    dump = snapshot.compiled.to_dump()["rateLimits"]["RateLimitPolicy/default/gateway-budget"]
    assert dump["store"] == {"type": "Redis", "redis": {"address": "127.0.0.1:6390", "passwordSecretRef": "Secret/default/redis"}}
    record = FlowRecord(rate_limits=(limit,))
    assert PASSWORD not in json.dumps(copy.deepcopy(record), default=str)  # mitmproxy's flow state copy


@pytest.mark.parametrize(
    ("scope", "identity", "route", "headers", "key"),
    [
        ("PerAgent", Identity("team-a", "agent"), "default/api", {}, "ns/p|PerAgent|team-a/agent"),
        ("PerRoute", Identity("team-a", "agent"), "default/api", {}, "ns/p|PerRoute|default/api"),
        ("PerRoute", Identity("team-a", "agent"), None, {}, "ns/p|PerRoute|(no route)"),
        ("PerExecution", Identity("a", "b"), None, {EXECUTION_HEADER: "run-7"}, "ns/p|PerExecution|a/b|run-7"),
        ("PerExecution", Identity("a", "b"), None, {}, "ns/p|PerExecution|a/b|-"),
        ("PerExecution", Identity("a", "b"), None, {EXECUTION_HEADER: "  "}, "ns/p|PerExecution|a/b|-"),
    ],
)
def test_bucket_keys(scope: str, identity: Identity, route: str | None, headers: dict[str, str], key: str) -> None:
    limit = RateLimit(ObjectRef("RateLimitPolicy", "ns", "p"), 60.0, requests=1, scope=scope)
    assert bucket_key(limit, identity, route, headers) == key


def test_a_long_execution_id_is_hashed_into_a_bounded_key() -> None:
    limit = RateLimit(ObjectRef("RateLimitPolicy", "ns", "p"), 60.0, requests=1, scope="PerExecution")
    key = bucket_key(limit, Identity("a", "b"), None, {EXECUTION_HEADER: "x" * 10_000})
    assert len(key) < 150 and "sha256:" in key


HEAD = "apiVersion: clrk.apoxy.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: x, namespace: ns}\nspec:\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("  window: 1m\n", "cfg.yaml:5: RateLimitPolicy/ns/x: spec.requests: required field is missing (set requests, tokens or both)"),
        ("  tokens: 0\n  window: 1m\n", "cfg.yaml:5: RateLimitPolicy/ns/x: spec.tokens: must be at least 1, got 0"),
        (
            "  requests: 1\n  window: 1m\n  store: {type: Redis}\n",
            "cfg.yaml:7: RateLimitPolicy/ns/x: spec.store.redis: redis is required when type is Redis",
        ),
        (
            "  requests: 1\n  window: 1m\n  store: {type: Redis, redis: {address: redis}}\n",
            "cfg.yaml:7: RateLimitPolicy/ns/x: spec.store.redis.address: expected host:port, got 'redis'",
        ),
        (
            "  requests: 1\n  window: 1m\n  failureMode: Open\n",
            "cfg.yaml:7: RateLimitPolicy/ns/x: spec.failureMode: unsupported value 'Open': must be one of Allow, Deny",
        ),
        (
            "  requests: 1\n  window: 1m\n  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: gw}]\n"
            "  store: {type: Redis, redis: {address: '127.0.0.1:6379', passwordSecretRef: {name: nope}}}\n",
            'cfg.yaml:8: RateLimitPolicy/ns/x: spec.store.redis.passwordSecretRef.name: Secret "ns/nope" not found',
        ),
    ],
)
def test_problems_name_the_field(body: str, expected: str) -> None:
    assert expected in problems(HEAD + body)


def test_a_password_secret_without_the_password_key_is_a_problem() -> None:
    text = GATEWAY.replace("stringData: {password: s3cret-redis-pass}", "stringData: {pass: s3cret-redis-pass}")
    found = problems(text)
    assert any("spec.store.redis.passwordSecretRef.name: Secret \"default/redis\" has no key 'password'" in p for p in found), found
    assert not any(PASSWORD in p for p in found)


def test_an_unattached_policy_is_not_accepted() -> None:
    result = compiled(GATEWAY.replace("  - filters:\n    - {type: ExtensionRef, extensionRef: {group: clrk.apoxy.dev, kind: RateLimitPolicy, name: per-route}}\n", "  - {}\n"))
    accepted = {c.type: (c.status, c.reason) for c in result.statuses[ObjectRef("RateLimitPolicy", "default", "per-route")]}
    assert accepted["Accepted"] == ("False", "NoTarget")
