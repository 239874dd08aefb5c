"""The rate limiter (egressproxy/rate_limiter.py): 429 verdicts, Retry-After, Report mode, token spending, and
failureMode when the Redis store is unreachable (a real client dialling a closed loopback port)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from egressproxy.config.problems import ObjectRef
from egressproxy.flowrecord import Identity
from egressproxy.metrics import GatewayMetrics
from egressproxy.rate_limit_precedence import RateLimitTable
from egressproxy.rate_limiter import RateLimiter, local_store_warning, retry_after_seconds
from egressproxy.rate_limits import RateLimit, RedisStoreConfig
from tests.support.gateway import free_port

AGENT = Identity("team-a", "agent")


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def limit(name: str = "p", **kw: object) -> RateLimit:
    fields = {"window": 60.0, "requests": 2, **kw}
    return RateLimit(ObjectRef("RateLimitPolicy", "ns", name), **fields)  # type: ignore[arg-type]


def check(limiter: RateLimiter, budget: RateLimit, identity: Identity = AGENT):  # type: ignore[no-untyped-def]
    return asyncio.run(limiter.check(budget, identity, "default/api", {}))


def metric(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


@pytest.mark.parametrize(("seconds", "header"), [(0.001, 1), (1.0, 1), (1.2, 2), (59.0, 59), (59.0001, 60)])
def test_retry_after_rounds_up_to_whole_seconds(seconds: float, header: int) -> None:
    assert retry_after_seconds(seconds) == header


def test_over_the_limit_is_a_429_naming_the_policy_with_the_seconds_until_a_slot_frees() -> None:
    clock = Clock()
    limiter = RateLimiter(GatewayMetrics(), clock)
    assert check(limiter, limit()).denial is None
    assert check(limiter, limit()).denial is None
    clock.now += 15.5
    denied = check(limiter, limit())
    assert denied.denial is not None
    assert (denied.denial.reason, denied.denial.policy, denied.denial.status_code) == (
        "rate-limited", "RateLimitPolicy/ns/p", 429
    )
    assert denied.retry_after == 45
    assert "2 requests per 60s (PerAgent)" in denied.denial.message
    assert check(limiter, limit(), identity=Identity("team-b", "agent")).denial is None  # another workload


def test_a_merged_budget_counts_apart_from_another_merge_and_is_named_by_its_most_specific_policy() -> None:
    limiter = RateLimiter(GatewayMetrics(), Clock())
    gateway = ObjectRef("RateLimitPolicy", "ns", "gateway")
    route_a = limit("route-a", requests=1, policies=(ObjectRef("RateLimitPolicy", "ns", "route-a"), gateway))
    route_b = limit("route-b", requests=1, policies=(ObjectRef("RateLimitPolicy", "ns", "route-b"), gateway))
    assert check(limiter, route_a).denial is None
    assert check(limiter, route_b).denial is None  # another budget: its own counter
    denied = check(limiter, route_a)
    assert denied.denial is not None and denied.denial.policy == "RateLimitPolicy/ns/route-a"
    same = limit("route-a", requests=1, policies=route_a.policies)  # the same budget, compiled again (a reload)
    assert check(limiter, same).denial is not None


def test_report_mode_lets_the_request_pass_and_says_which_policy_would_have_denied() -> None:
    limiter = RateLimiter(GatewayMetrics(), Clock())
    report = limit(requests=1, report_only=True)
    assert check(limiter, report).report is None
    second = check(limiter, report)
    assert second.denial is None and second.report is not None and second.report.name == "RateLimitPolicy/ns/p"


def test_tokens_are_spent_after_the_response_and_deny_the_next_request() -> None:
    clock = Clock()
    limiter = RateLimiter(GatewayMetrics(), clock)
    tokens = limit(requests=None, tokens=100)
    first = check(limiter, tokens)
    assert first.denial is None and first.spend is not None
    asyncio.run(limiter.spend(first.spend, 120))  # one request overdraws once
    denied = check(limiter, tokens)
    assert denied.denial is not None and "100 tokens per 60s" in denied.denial.message
    clock.now += 60
    assert check(limiter, tokens).denial is None


def unreachable(**kw: object) -> RateLimit:
    return limit(redis=RedisStoreConfig("127.0.0.1", free_port()), **kw)


def test_redis_down_with_failure_mode_allow_passes_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    metrics = GatewayMetrics()
    limiter = RateLimiter(metrics, Clock())
    policy = unreachable(requests=1)
    with caplog.at_level(logging.WARNING, logger="egressproxy"):
        results = [check(limiter, policy) for _ in range(4)]
    assert all(r.denial is None for r in results)
    assert metric(metrics, "egress_rate_limit_store_errors_total", policy="RateLimitPolicy/ns/p", failure_mode="Allow") == 4
    outage = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(outage) == 1 and "Redis at 127.0.0.1:" in outage[0]  # logged once per outage, not per request


def test_redis_down_with_failure_mode_deny_answers_429() -> None:
    metrics = GatewayMetrics()
    limiter = RateLimiter(metrics, Clock())
    denied = check(limiter, unreachable(fail_open=False))
    assert denied.denial is not None and denied.denial.status_code == 429
    assert denied.retry_after == 1
    assert "unreachable (failureMode Deny)" in denied.denial.message
    assert metric(metrics, "egress_rate_limit_store_errors_total", policy="RateLimitPolicy/ns/p", failure_mode="Deny") == 1


def test_a_failed_store_is_left_alone_for_a_moment_so_requests_do_not_each_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(GatewayMetrics(), clock)
    policy = unreachable()
    check(limiter, policy)
    store = limiter._redis[policy.redis]  # type: ignore[index]
    calls = []
    original = store.admit

    async def counting(*args: object) -> object:
        calls.append(args)
        return await original(*args)  # type: ignore[arg-type]

    store.admit = counting  # type: ignore[method-assign]
    check(limiter, policy)
    assert calls == []  # decided by failureMode without asking
    clock.now += 1.0
    check(limiter, policy)
    assert len(calls) == 1  # asked again once the pause is over


def test_traffic_during_the_pause_does_not_extend_it() -> None:
    """Steady traffic while Redis is down must not keep the store paused forever once it is back."""
    clock = Clock()
    limiter = RateLimiter(GatewayMetrics(), clock)
    policy = unreachable()
    check(limiter, policy)  # fails: paused until +1s
    for _ in range(9):
        clock.now += 0.1
        check(limiter, policy)  # decided without asking
    assert limiter._down_until[policy.redis.address] == 501.0  # type: ignore[union-attr]


def test_report_mode_reports_instead_of_denying_when_redis_is_down_under_failure_mode_deny() -> None:
    limiter = RateLimiter(GatewayMetrics(), Clock())
    result = check(limiter, unreachable(fail_open=False, report_only=True))
    assert result.denial is None and result.report is not None and result.report.name == "RateLimitPolicy/ns/p"


class ClosingStore:
    """Stands in for a Redis client: records that it was closed."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.closed = False

    async def close(self) -> None:
        self.closed = True


def test_after_a_reload_clients_of_stores_no_policy_names_are_closed(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter(GatewayMetrics(), Clock())
    kept, moved, rotated = RedisStoreConfig("10.0.0.1", 6379), RedisStoreConfig("10.0.0.2", 6379), RedisStoreConfig("10.0.0.1", 6379, password="old-pw")
    stores = {config: ClosingStore(config.address) for config in (kept, moved, rotated)}
    limiter._redis.update(stores)  # type: ignore[arg-type]
    limiter._down_until["10.0.0.2:6379"] = 1.0
    with caplog.at_level(logging.INFO, logger="egressproxy"):
        asyncio.run(limiter.retain(frozenset({kept})))
    assert set(limiter._redis) == {kept}
    assert (stores[kept].closed, stores[moved].closed, stores[rotated].closed) == (False, True, True)
    assert "10.0.0.2:6379" not in limiter._down_until
    assert "old-pw" not in caplog.text and "Redis at 10.0.0.2:6379: client closed" in caplog.text


def test_close_closes_every_redis_client() -> None:
    limiter = RateLimiter(GatewayMetrics(), Clock())
    store = ClosingStore("10.0.0.1:6379")
    limiter._redis[RedisStoreConfig("10.0.0.1", 6379)] = store  # type: ignore[assignment]
    asyncio.run(limiter.close())
    assert store.closed and limiter._redis == {}


def test_a_real_client_is_closed_by_close() -> None:
    """The store's own close reaches redis-py's client (a closed port: nothing to connect to, nothing leaks)."""
    limiter = RateLimiter(GatewayMetrics(), Clock())
    policy = unreachable()
    check(limiter, policy)
    store = limiter._redis[policy.redis]  # type: ignore[index]
    closed = []
    original = store._client.aclose

    async def recording() -> None:
        closed.append(True)
        await original()

    store._client.aclose = recording
    asyncio.run(limiter.close())
    assert closed == [True]


def table_with(*budgets: RateLimit) -> RateLimitTable:
    table = RateLimitTable()
    for i, budget in enumerate(budgets):
        table._memo[(None, None, f"listener-{i}", None)] = budget
    return table


def test_local_budgets_under_several_workers_get_one_warning_naming_them() -> None:
    local, shared = limit("local"), limit("shared", redis=RedisStoreConfig("10.0.0.1", 6379, password="pw-secret"))
    warning = local_store_warning(table_with(local, shared), 3)
    assert warning is not None
    assert "RateLimitPolicy/ns/local" in warning and "3 worker processes" in warning and "up to 3 times" in warning
    assert "shared" not in warning and "pw-secret" not in warning
    assert local_store_warning(table_with(local), 1) is None  # one process counts everything
    assert local_store_warning(table_with(shared), 2) is None  # Redis counts once across workers
