"""The Redis store against a real redis-server: the Lua scripts keep the fixed-window rules of the Local store,
atomically, shared by every client; a password is used and never shown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from egressproxy.rate_limit_stores import LocalStore, RateLimitStore, RedisStore, StoreUnavailable
from egressproxy.rate_limits import RedisStoreConfig
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401

T = TypeVar("T")


def run(make: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(make())  # type: ignore[arg-type]


def store_for(server: RedisServer, password: str | None = None) -> RedisStore:
    return RedisStore(RedisStoreConfig("127.0.0.1", server.port, password=password))


async def admit_n(store: RateLimitStore, n: int, requests: int | None = 3, tokens: int | None = None, window: float = 60) -> list[bool]:
    return [(await store.admit("k", requests, "k", tokens, window)).allowed for _ in range(n)]


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_both_stores_follow_the_same_rules(kind: str, redis_server: Callable[..., RedisServer]) -> None:  # noqa: F811
    async def scenario() -> tuple[list[bool], float, str, bool, bool]:
        store: RateLimitStore = LocalStore() if kind == "local" else store_for(redis_server())
        allowed = await admit_n(store, 5)
        denied = await store.admit("k", 3, "k", None, 60)
        await store.spend("t", 50, 60)
        tokens_denied = await store.admit("r", None, "t", 50, 60)
        tokens_ok = await store.admit("r", None, "t2", 50, 60)
        await store.close()
        return allowed, denied.retry_after, tokens_denied.exhausted, tokens_denied.allowed, tokens_ok.allowed

    allowed, retry_after, exhausted, tokens_allowed, other_allowed = run(scenario)
    assert allowed == [True, True, True, False, False]
    assert 59 < retry_after <= 60
    assert (exhausted, tokens_allowed, other_allowed) == ("tokens", False, True)


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_requests_and_tokens_under_one_bucket_key_are_two_counters(kind: str, redis_server: Callable[..., RedisServer]) -> None:  # noqa: F811
    """A budget with both limits passes one key for both: spent tokens never take request slots, nor the reverse."""

    async def scenario() -> tuple[list[bool], bool, str]:
        store: RateLimitStore = LocalStore() if kind == "local" else store_for(redis_server())
        first = await admit_n(store, 1, requests=3, tokens=50)
        await store.spend("k", 30, 60)  # 30 tokens: not 30 requests
        more = await admit_n(store, 2, requests=3, tokens=50)
        await store.spend("k", 30, 60)  # 60 of 50 tokens
        denied = await store.admit("k", 3, "k", 50, 60)
        await store.close()
        return first + more, denied.allowed, denied.exhausted

    allowed, denied, exhausted = run(scenario)
    assert allowed == [True, True, True] and (denied, exhausted) == (False, "tokens")


def test_two_clients_share_one_counter_and_concurrent_admits_never_overshoot(redis_server: Callable[..., RedisServer]) -> None:  # noqa: F811
    server = redis_server()

    async def scenario() -> int:
        a, b = store_for(server), store_for(server)
        results = await asyncio.gather(*(s.admit("shared", 10, "shared", None, 60) for s in (a, b) * 15))
        await a.close()
        await b.close()
        return sum(r.allowed for r in results)

    assert run(scenario) == 10


def test_the_window_frees_when_redis_expires_the_key(redis_server: Callable[..., RedisServer]) -> None:  # noqa: F811
    server = redis_server()

    async def scenario() -> float:
        store = store_for(server)
        assert await admit_n(store, 2, requests=1, window=0.3) == [True, False]
        started = time.monotonic()
        while not (await store.admit("k", 1, "k", None, 0.3)).allowed:
            assert time.monotonic() - started < 5
            await asyncio.sleep(0.02)
        await store.close()
        return time.monotonic() - started

    assert run(scenario) < 0.35


def test_a_password_protected_redis(redis_server: Callable[..., RedisServer]) -> None:  # noqa: F811
    server = redis_server(password="pw-for-redis-123")

    async def scenario() -> tuple[bool, str]:
        good = store_for(server, "pw-for-redis-123")
        ok = (await good.admit("k", 1, "k", None, 60)).allowed
        bad = store_for(server, "wrong-password-456")
        with pytest.raises(StoreUnavailable) as failed:
            await bad.admit("k", 1, "k", None, 60)
        await good.close()
        await bad.close()
        return ok, str(failed.value)

    ok, message = run(scenario)
    assert ok
    assert "pw-for-redis-123" not in message and "wrong-password-456" not in message
    assert message.startswith(f"Redis at {server.address}: ")


def test_a_killed_redis_is_unavailable_then_answers_again_on_the_same_port(redis_server: Callable[..., RedisServer]) -> None:  # noqa: F811
    server = redis_server()

    async def scenario() -> None:
        store = store_for(server)
        assert (await store.admit("k", 5, "k", None, 60)).allowed
        server.stop()
        with pytest.raises(StoreUnavailable):
            await store.admit("k", 5, "k", None, 60)
        server.start()
        assert (await store.admit("k", 5, "k", None, 60)).allowed  # a fresh server: counters start again
        await store.close()

    run(scenario)
