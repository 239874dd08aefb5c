"""The rate limiter (egressproxy/rate_limiter.py): 429 verdicts, Retry-After, Report mode, token spending, and
failureMode when the Redis store is unreachable (a real client dialling a closed loopback port)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from egressproxy.config.problems import ObjectRef
from egressproxy.flowrecord import Identity
from egressproxy.metrics import GatewayMetrics
from egressproxy.rate_limiter import RateLimiter, retry_after_seconds
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


def check(limiter: RateLimiter, *limits: RateLimit, identity: Identity = AGENT):  # type: ignore[no-untyped-def]
    return asyncio.run(limiter.check(limits, identity, "default/api", {}))


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


def test_every_attached_policy_must_pass() -> None:
    limiter = RateLimiter(GatewayMetrics(), Clock())
    strict, loose = limit("strict", requests=1), limit("loose", requests=100)
    assert check(limiter, strict, loose).denial is None
    denied = check(limiter, loose, strict)
    assert denied.denial is not None and denied.denial.policy == "RateLimitPolicy/ns/strict"


def test_report_mode_lets_the_request_pass_and_says_which_policy_would_have_denied() -> None:
    limiter = RateLimiter(GatewayMetrics(), Clock())
    report = limit(requests=1, report_only=True)
    assert check(limiter, report).reports == ()
    second = check(limiter, report)
    assert second.denial is None and [r.name for r in second.reports] == ["RateLimitPolicy/ns/p"]


def test_tokens_are_spent_after_the_response_and_deny_the_next_request() -> None:
    clock = Clock()
    limiter = RateLimiter(GatewayMetrics(), clock)
    tokens = limit(requests=None, tokens=100)
    first = check(limiter, tokens)
    assert first.denial is None and len(first.spend) == 1
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
    assert result.denial is None and [r.name for r in result.reports] == ["RateLimitPolicy/ns/p"]
