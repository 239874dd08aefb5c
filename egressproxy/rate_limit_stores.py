"""Where rate-limit counters live: in this process (`Local`) or in Redis (`Redis`), behind one small interface.

`Local` is one `FixedWindows` per gateway process. Under `--workers N` each worker process counts on its own, so
a Local limit holds per worker (N workers may let up to N times the limit through together); use `Redis` to
count once across workers and replicas.

`Redis` runs the same fixed-window rules (egressproxy/rate_windows.py) as one Lua script per call: the check and
the increment must be atomic across gateways, and a check-then-increment is conditional, which MULTI/EXEC cannot
express without WATCH and retry loops; a script does it in one round trip, and Redis' own clock and key expiry
keep the window, so gateways with skewed clocks share it. redis-py's asyncio client never blocks the event loop;
socket timeouts bound a slow Redis, and any error is `StoreUnavailable` for the caller's failureMode.
"""

from __future__ import annotations

from typing import Any

from egressproxy.rate_limits import RedisStoreConfig
from egressproxy.rate_windows import ALLOWED, Admission, FixedWindows

__all__ = ["RateLimitStore", "LocalStore", "RedisStore", "StoreUnavailable", "ADMIT_SCRIPT", "SPEND_SCRIPT"]

KEY_PREFIX = "egressproxy:ratelimit:"
# A budget's request count and its spent tokens are two counters, even under one bucket key: both stores suffix.
REQUESTS_SUFFIX = ":requests"
TOKENS_SUFFIX = ":tokens"
REDIS_TIMEOUT = 0.5  # seconds for a connect and for each call; beyond that the store counts as unreachable


class StoreUnavailable(Exception):
    """The store could not answer; the policy's failureMode decides. Never carries a credential."""


class RateLimitStore:
    """Counters for fixed windows. `admit` checks (and counts one request); `spend` adds reported tokens."""

    name = "store"

    async def admit(
        self, requests_key: str, requests: int | None, tokens_key: str, tokens: int | None, window: float
    ) -> Admission:
        raise NotImplementedError

    async def spend(self, tokens_key: str, amount: int, window: float) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class LocalStore(RateLimitStore):
    name = "Local"

    def __init__(self, windows: FixedWindows | None = None) -> None:
        self.windows = windows if windows is not None else FixedWindows()

    async def admit(
        self, requests_key: str, requests: int | None, tokens_key: str, tokens: int | None, window: float
    ) -> Admission:
        return self.windows.admit(requests_key + REQUESTS_SUFFIX, requests, tokens_key + TOKENS_SUFFIX, tokens, window)

    async def spend(self, tokens_key: str, amount: int, window: float) -> None:
        self.windows.spend(tokens_key + TOKENS_SUFFIX, amount, window)


# KEYS[1] requests bucket, KEYS[2] tokens bucket; ARGV[1] request limit (0: none), ARGV[2] token limit (0:
# none), ARGV[3] window in ms. Returns {1, 0, ""} to admit, {0, ms until the window closes, which} to deny.
ADMIT_SCRIPT = """
local function closes(key, window)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then return window end
  return ttl
end
local req_limit, tok_limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if tok_limit > 0 then
  local spent = tonumber(redis.call('GET', KEYS[2]) or '0')
  if spent >= tok_limit then return {0, closes(KEYS[2], window), 'tokens'} end
end
if req_limit > 0 then
  local count = tonumber(redis.call('GET', KEYS[1]) or '0')
  if count >= req_limit then return {0, closes(KEYS[1], window), 'requests'} end
  redis.call('INCR', KEYS[1])
  if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], window) end
end
return {1, 0, ''}
"""

# KEYS[1] tokens bucket; ARGV[1] amount, ARGV[2] window in ms.
SPEND_SCRIPT = """
redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


class RedisStore(RateLimitStore):
    name = "Redis"

    def __init__(self, config: RedisStoreConfig, *, timeout: float = REDIS_TIMEOUT) -> None:
        import redis.asyncio as aioredis  # imported here: only a Redis store needs the client
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.address = config.address
        self._client: Any = aioredis.Redis(
            host=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # No retries inside the client: a request waits at most one timeout, then failureMode decides (and
            # the limiter leaves a failed store alone for a moment).
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._admit = self._client.register_script(ADMIT_SCRIPT)
        self._spend = self._client.register_script(SPEND_SCRIPT)

    async def admit(
        self, requests_key: str, requests: int | None, tokens_key: str, tokens: int | None, window: float
    ) -> Admission:
        keys = [KEY_PREFIX + requests_key + REQUESTS_SUFFIX, KEY_PREFIX + tokens_key + TOKENS_SUFFIX]
        args = [requests or 0, tokens or 0, _ms(window)]
        result = await self._call(self._admit, keys, args)
        allowed, ttl_ms, which = int(result[0]), int(result[1]), result[2]
        if allowed:
            return ALLOWED
        return Admission(False, ttl_ms / 1000.0, which.decode() if isinstance(which, bytes) else str(which))

    async def spend(self, tokens_key: str, amount: int, window: float) -> None:
        if amount > 0:
            await self._call(self._spend, [KEY_PREFIX + tokens_key + TOKENS_SUFFIX], [amount, _ms(window)])

    async def _call(self, script: Any, keys: list[str], args: list[int]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except Exception as e:
            # The exception's text may quote the server's or the client's words; the caller logs only the
            # address and the error's type.
            raise StoreUnavailable(f"Redis at {self.address}: {type(e).__name__}") from None

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception:
            pass


def _ms(seconds: float) -> int:
    return max(1, int(round(seconds * 1000)))
