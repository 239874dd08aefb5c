"""Google OAuth access tokens minted from a service-account key, cached and refreshed before they expire.

The signed JWT assertion is google-auth's (`google.auth.jwt.encode` with the service account's
`google.auth.crypt.Signer`, built once at compile time); the token request (RFC 7523 jwt-bearer grant) is sent
by `fetch`, which the data plane gives as an httpx client over the one dialer (egressproxy/dialer_http.py), so
the token endpoint gets the SSRF guard, the DNS settings and verified TLS like any upstream, and the event loop
never blocks. google-auth's own `refresh()` is not used: it is synchronous and would dial on its own.

A token is reused until `refresh_at` (its expiry minus min(225 s, half its lifetime), google-auth's threshold
for long-lived tokens), then one refresh runs for all waiting requests. A refresh that fails while the old
token is still valid keeps serving the old one; with no valid token the error propagates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from google.auth import jwt

from egressproxy.credentials import GcpServiceAccount

__all__ = ["TokenFetch", "TokenError", "ServiceAccountTokens"]

# POST the form to the URI, return (status, parsed JSON body or None)
TokenFetch = Callable[[str, dict[str, str]], Awaitable[tuple[int, Any]]]
_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_ASSERTION_LIFETIME = 3600
_REFRESH_THRESHOLD = 225.0  # seconds before expiry (google.auth._helpers.REFRESH_THRESHOLD)


class TokenError(Exception):
    """No access token could be had; the message names the account and the endpoint, never key material."""


@dataclass(slots=True)
class _Token:
    value: str = field(repr=False)
    expires_at: float
    refresh_at: float


class ServiceAccountTokens:
    """One cache per process: service account (by key hash) -> its current token."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tokens: dict[str, _Token] = {}
        self._refreshing: dict[str, asyncio.Future[_Token]] = {}
        self.fetches = 0  # token requests sent (tests and /stats read it)

    async def token(self, account: GcpServiceAccount, fetch: TokenFetch) -> str:
        now = self._clock()
        cached = self._tokens.get(account.cache_key)
        if cached is not None and now < cached.refresh_at:
            return cached.value
        try:
            fresh = await self._refresh(account, fetch)
        except TokenError:
            if cached is not None and now < cached.expires_at:
                return cached.value  # still valid: the next request tries again
            raise
        return fresh.value

    async def _refresh(self, account: GcpServiceAccount, fetch: TokenFetch) -> _Token:
        running = self._refreshing.get(account.cache_key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[_Token] = asyncio.get_running_loop().create_future()
        self._refreshing[account.cache_key] = future
        try:
            token = await self._mint(account, fetch)
            self._tokens[account.cache_key] = token
            future.set_result(token)
            return token
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
            raise
        finally:
            del self._refreshing[account.cache_key]

    async def _mint(self, account: GcpServiceAccount, fetch: TokenFetch) -> _Token:
        issued = self._clock()
        payload = {
            "iss": account.client_email,
            "scope": " ".join(account.scopes),
            "aud": account.token_uri,
            "iat": int(issued),
            "exp": int(issued) + _ASSERTION_LIFETIME,
        }
        assertion = jwt.encode(account.signer, payload).decode()
        self.fetches += 1
        try:
            status, body = await fetch(account.token_uri, {"grant_type": _GRANT, "assertion": assertion})
        except Exception as e:  # the dialer's typed refusal or a network failure; its text names no secret
            raise TokenError(f"token request for {account.client_email} to {account.token_uri} failed: {e}") from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if status != 200 or not isinstance(token, str) or not token:
            raise TokenError(f"token endpoint {account.token_uri} answered {status} for {account.client_email}")
        lifetime = float(body.get("expires_in") or _ASSERTION_LIFETIME)
        expires_at = issued + lifetime
        return _Token(token, expires_at, expires_at - min(_REFRESH_THRESHOLD, lifetime / 2))
