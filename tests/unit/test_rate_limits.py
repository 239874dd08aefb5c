"""RateLimitPolicy: schema extensions, the compiled forms, the field-by-field merge of the policies that apply to
a request (DESIGN.md 4), bucket keys, and no secret anywhere."""

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
from egressproxy.snapshot import Snapshot

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


def test_each_policy_compiles_as_written() -> None:
    result = compiled()
    assert result.ok and result.snapshot is not None
    table = result.snapshot.compiled.rate_limits
    per_route = table.policies[ObjectRef("RateLimitPolicy", "default", "per-route")]
    assert (per_route.requests, per_route.tokens, per_route.window, per_route.scope) == (5, None, 60.0, "PerRoute")
    assert (per_route.store, per_route.redis, per_route.failure_mode, per_route.enforcement_mode) == (None, None, None, None)
    assert per_route.sets == ("requests", "window", "scope")
    budget = table.policies[ObjectRef("RateLimitPolicy", "default", "gateway-budget")]
    assert (budget.tokens, budget.store, budget.failure_mode) == (1000, "Redis", "Deny")
    assert budget.redis is not None and (budget.redis.host, budget.redis.port, budget.redis.password) == (
        "127.0.0.1", 6390, PASSWORD
    )


def decide(snapshot: Snapshot, host: str, listener: str = "http") -> RateLimit | None:
    found = snapshot.gateway.listener(listener)
    assert found is not None
    return decide_request(snapshot, found, view(host)).rate_limit


def snapshot_of(text: str) -> Snapshot:
    result = compiled(text)
    assert result.ok and result.snapshot is not None, [str(p) for p in result.problems]
    return result.snapshot


def test_a_request_gets_one_budget_merged_field_by_field_named_by_the_most_specific_policy() -> None:
    """DESIGN.md 4: the route's policy wins requests, window and scope; the gateway's supplies what the route's
    leaves unset (tokens, store, failureMode); the budget is named by the route's."""
    limit = decide(snapshot_of(GATEWAY), "api.example.com")
    assert limit is not None
    assert limit.name == "RateLimitPolicy/default/per-route"
    assert [str(r) for r in limit.policies] == ["RateLimitPolicy/default/per-route", "RateLimitPolicy/default/gateway-budget"]
    assert (limit.requests, limit.tokens, limit.window, limit.scope) == (5, 1000, 60.0, "PerRoute")
    assert limit.redis is not None and limit.redis.address == "127.0.0.1:6390" and not limit.fail_open
    assert dict((f, str(r)) for f, r in limit.sources) == {
        "requests": "RateLimitPolicy/default/per-route",
        "tokens": "RateLimitPolicy/default/gateway-budget",
        "window": "RateLimitPolicy/default/per-route",
        "scope": "RateLimitPolicy/default/per-route",
        "store": "RateLimitPolicy/default/gateway-budget",
        "failureMode": "RateLimitPolicy/default/gateway-budget",
    }
    alone = decide(snapshot_of(GATEWAY), "other.example.com")
    assert alone is not None and alone.name == "RateLimitPolicy/default/gateway-budget"
    assert (alone.requests, alone.tokens, alone.window, alone.scope) == (None, 1000, 3600.0, "PerAgent")


LAYERS = """\
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
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other}
spec:
  parentRefs: [{name: gw}]
  hostnames: [other.example.com]
"""


def rate_policy(name: str, target: str, body: str) -> str:
    refs = {
        "gateway": "{group: clrk.apoxy.dev, kind: EgressGateway, name: gw}",
        "api": "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}",
    }
    spec = "".join(f"\n  {line}" for line in body.strip().splitlines())
    return f"---\napiVersion: clrk.apoxy.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{name: {name}}}\nspec:{spec}\n  targetRefs: [{refs[target]}]\n"


def test_gateway_requests_and_route_tokens_make_one_budget() -> None:
    snapshot = snapshot_of(
        LAYERS + rate_policy("gw-requests", "gateway", "requests: 10\nwindow: 1m") + rate_policy("api-tokens", "api", "tokens: 500\nwindow: 1m")
    )
    limit = decide(snapshot, "api.example.com")
    assert limit is not None
    assert (limit.name, limit.requests, limit.tokens, limit.window) == ("RateLimitPolicy/default/api-tokens", 10, 500, 60.0)


def test_a_looser_route_policy_overrides_the_gateway_requests_and_inherits_the_rest() -> None:
    snapshot = snapshot_of(
        LAYERS
        + rate_policy("gw-requests", "gateway", "requests: 10\nwindow: 1m\nscope: PerRoute\nenforcementMode: Report")
        + rate_policy("api-more", "api", "requests: 100\nwindow: 1m")
    )
    limit = decide(snapshot, "api.example.com")
    assert limit is not None
    assert (limit.name, limit.requests, limit.scope, limit.report_only) == ("RateLimitPolicy/default/api-more", 100, "PerRoute", True)
    gateway_only = decide(snapshot, "other.example.com")
    assert gateway_only is not None and (gateway_only.name, gateway_only.requests) == ("RateLimitPolicy/default/gw-requests", 10)


def test_two_policies_at_one_scope_merge_in_name_order_the_first_winning() -> None:
    snapshot = snapshot_of(
        LAYERS
        + rate_policy("b-second", "gateway", "requests: 50\ntokens: 7\nwindow: 1h\nscope: PerExecution")
        + rate_policy("a-first", "gateway", "requests: 5\nwindow: 1m")
    )
    limit = decide(snapshot, "other.example.com")
    assert limit is not None
    assert limit.name == "RateLimitPolicy/default/a-first"
    assert (limit.requests, limit.tokens, limit.window, limit.scope) == (5, 7, 60.0, "PerExecution")


def test_unset_everywhere_the_defaults_apply() -> None:
    limit = decide(snapshot_of(LAYERS + rate_policy("plain", "gateway", "requests: 1\nwindow: 1s")), "api.example.com")
    assert limit is not None
    assert (limit.scope, limit.redis, limit.fail_open, limit.report_only) == ("PerAgent", None, True, False)


def test_store_is_replaced_whole_so_no_password_follows_another_address() -> None:
    snapshot = snapshot_of(
        LAYERS
        + rate_policy(
            "gw-redis", "gateway",
            "requests: 10\nwindow: 1m\nstore: {type: Redis, redis: {address: '10.0.0.1:6379', passwordSecretRef: {name: redis}}}",
        )
        + rate_policy("api-redis", "api", "requests: 20\nwindow: 1m\nstore: {type: Redis, redis: {address: '10.0.0.2:6379'}}")
        + rate_policy("zz-local", "api", "tokens: 5\nwindow: 1m")
        + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: redis}\nstringData: {password: s3cret-redis-pass}\n"
    )
    limit = decide(snapshot, "api.example.com")
    assert limit is not None and limit.redis is not None
    assert (limit.redis.address, limit.redis.password, limit.redis.password_secret) == ("10.0.0.2:6379", None, None)
    other = decide(snapshot, "other.example.com")
    assert other is not None and other.redis is not None and other.redis.password == PASSWORD


def test_a_policy_attached_twice_contributes_once() -> None:
    text = GATEWAY.replace(
        "spec: {requests: 5, window: 1m, scope: PerRoute}",
        "spec:\n  requests: 5\n  window: 1m\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]",
    )
    limit = decide(snapshot_of(text), "api.example.com")
    assert limit is not None
    assert [str(r) for r in limit.policies] == ["RateLimitPolicy/default/per-route", "RateLimitPolicy/default/gateway-budget"]


def test_the_same_budget_shares_a_counter_and_different_budgets_do_not() -> None:
    """Counters are keyed by the contributing policies plus the scope's subject."""
    snapshot = snapshot_of(
        LAYERS
        + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: more}\n"
        + "spec:\n  parentRefs: [{name: gw}]\n  hostnames: [more.example.com]\n"
        + rate_policy("gw-requests", "gateway", "requests: 10\nwindow: 1m")
        + rate_policy("api-tokens", "api", "tokens: 500\nwindow: 1m")
    )
    agent = Identity("team-a", "agent")
    api, other, more = (decide(snapshot, h) for h in ("api.example.com", "other.example.com", "more.example.com"))
    assert api is not None and other is not None and more is not None
    key = bucket_key(api, agent, "default/api", {})
    assert key == "default/api-tokens+default/gw-requests|PerAgent|team-a/agent"
    assert bucket_key(other, agent, "default/other", {}) == "default/gw-requests|PerAgent|team-a/agent"
    assert more is not other and bucket_key(more, agent, "default/more", {}) == bucket_key(other, agent, "default/other", {})
    assert bucket_key(other, Identity("team-b", "agent"), "default/other", {}) != bucket_key(other, agent, "default/other", {})


def test_budgets_are_merged_at_compile_time_and_looked_up_per_request() -> None:
    snapshot = snapshot_of(GATEWAY)
    table = snapshot.compiled.rate_limits
    merged = {limit.name for limit in table.budgets()}
    assert merged == {"RateLimitPolicy/default/per-route", "RateLimitPolicy/default/gateway-budget"}  # before any request
    warmed = len(table._memo)
    first, second = decide(snapshot, "api.example.com"), decide(snapshot, "api.example.com")
    assert first is second and len(table._memo) == warmed


def test_the_redis_password_is_in_no_dump_repr_or_flow_copy() -> None:
    snapshot = snapshot_of(GATEWAY)
    limit = decide(snapshot, "api.example.com")
    assert limit is not None
    assert PASSWORD not in json.dumps(snapshot.to_dump())
    assert PASSWORD not in repr(limit) and PASSWORD not in repr(snapshot.compiled)
    assert PASSWORD not in json.dumps(limit.to_dump())
    dump = snapshot.compiled.to_dump()["rateLimits"]["RateLimitPolicy/default/gateway-budget"]
    assert dump["store"] == {"type": "Redis", "redis": {"address": "127.0.0.1:6390", "passwordSecretRef": "Secret/default/redis"}}
    record = FlowRecord(rate_limit=limit)
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
