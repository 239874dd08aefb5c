"""addons/rate_limits.py with mitmproxy's test helpers: a 429 answer with Retry-After before anything is dialled,
and a token-counting tap on the response that spends what the provider reported."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mitmproxy.test import taddons, tflow, tutils

from addons.rate_limits import RateLimits
from egressproxy.config.problems import ObjectRef
from egressproxy.engine.answers import flow_record
from egressproxy.flowrecord import Identity
from egressproxy.rate_limits import RateLimit, RedisStoreConfig
from egressproxy.runtime.state import GatewayState
from egressproxy.taps import TapChain
from egressproxy.token_usage import TokenCountingTap
from tests.support.addon_state import counter
from tests.support.trace import trace_lines

REQUESTS = RateLimit(ObjectRef("RateLimitPolicy", "ns", "one"), 60.0, requests=1)
TOKENS = RateLimit(ObjectRef("RateLimitPolicy", "ns", "tokens"), 60.0, tokens=10)


def flow_with(budget: RateLimit | None):  # type: ignore[no-untyped-def]
    flow = tflow.tflow()
    flow_record(flow).rate_limit = budget
    flow_record(flow).identity = Identity("team-a", "agent")
    return flow


def test_over_the_limit_the_addon_answers_429_with_retry_after(tmp_path: Path) -> None:
    state = GatewayState(tmp_path)
    addon = RateLimits(state)
    with taddons.context(addon):
        first, second = flow_with(REQUESTS), flow_with(REQUESTS)
        asyncio.run(addon.requestheaders(first))
        asyncio.run(addon.requestheaders(second))
    assert first.response is None
    assert second.response is not None and second.response.status_code == 429
    assert second.response.headers["x-egress-denied"] == "rate-limited"
    assert 59 <= int(second.response.headers["retry-after"]) <= 60
    assert json.loads(second.response.content)["policy"] == "RateLimitPolicy/ns/one"
    assert counter(state, "egress_denials_total", reason="rate-limited") == 1
    # The decision trace names the policy consulted both times (egressproxy/decision_trace.py).
    assert trace_lines(first) == ["rate-limit RateLimitPolicy/ns/one: allow (within budget)"]
    assert trace_lines(second) == ["rate-limit RateLimitPolicy/ns/one: deny (rate-limited)"]


def test_a_flow_without_limits_is_left_alone(tmp_path: Path) -> None:
    addon = RateLimits(GatewayState(tmp_path))
    flow = flow_with(None)
    asyncio.run(addon.requestheaders(flow))
    assert flow.response is None and addon.pending == {}


def test_the_token_tap_spends_what_the_response_reports(tmp_path: Path) -> None:
    state = GatewayState(tmp_path)
    addon = RateLimits(state)

    async def scenario() -> int | None:
        flow = flow_with(TOKENS)
        await addon.requestheaders(flow)
        flow.response = tutils.tresp(headers=[(b"content-type", b"application/json")], content=b"")
        addon.responseheaders(flow)
        (tap,) = flow_record(flow).response_taps
        assert isinstance(tap, TokenCountingTap)
        chain = TapChain([tap])
        chain.feed(b'{"usage": {"input_tokens": 8, "output_tokens": 7}}')
        chain.finish()
        await asyncio.gather(*addon.spending)
        denied = flow_with(TOKENS)
        await addon.requestheaders(denied)
        return denied.response.status_code if denied.response is not None else None

    assert asyncio.run(scenario()) == 429  # 15 tokens spent of 10: the next request waits for the window


def test_shutdown_closes_the_redis_clients(tmp_path: Path) -> None:
    """mitmproxy's `done` hook (run's and mitmweb's shutdown) closes every Redis client the limiter opened."""
    state = GatewayState(tmp_path)
    addon = RateLimits(state)
    closed: list[str] = []

    class Store:
        address = "10.0.0.1:6379"

        async def close(self) -> None:
            closed.append(self.address)

    state.rate_limiter._redis[RedisStoreConfig("10.0.0.1", 6379)] = Store()  # type: ignore[assignment]
    asyncio.run(addon.done())
    assert closed == ["10.0.0.1:6379"] and state.rate_limiter._redis == {}
