"""egressproxy/gcp_tokens.py: tokens minted from a service account, cached, refreshed before expiry.

A fake clock and a fake token endpoint (an async function): the assertion is google-auth's JWT, verifiable
with the account's public key; one refresh serves concurrent requests; a failed refresh keeps a still-valid
token and otherwise fails without key material in the message.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt

from egressproxy.credentials import GcpServiceAccount
from egressproxy.gcp_tokens import ServiceAccountTokens, TokenError

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
PUBLIC = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
ACCOUNT = GcpServiceAccount(
    "sa@p.iam.gserviceaccount.com",
    "https://oauth2.googleapis.com/token",
    crypt.RSASigner.from_service_account_info({"private_key": PEM, "client_email": "sa@p"}),
    "hash-1",
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Endpoint:
    def __init__(self, expires_in: int = 3600) -> None:
        self.forms: list[dict[str, str]] = []
        self.expires_in = expires_in
        self.fail: Exception | None = None
        self.status = 200
        self.gate: asyncio.Event | None = None

    async def __call__(self, uri: str, form: dict[str, str]) -> tuple[int, Any]:
        assert uri == ACCOUNT.token_uri
        self.forms.append(form)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return self.status, {"access_token": f"tok-{len(self.forms)}", "expires_in": self.expires_in}


def test_the_assertion_is_a_jwt_bearer_grant_signed_by_the_service_account() -> None:
    endpoint = Endpoint()
    assert asyncio.run(ServiceAccountTokens().token(ACCOUNT, endpoint)) == "tok-1"
    [form] = endpoint.forms
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    claims = jwt.decode(form["assertion"], certs=PUBLIC, audience=ACCOUNT.token_uri)
    assert claims["iss"] == ACCOUNT.client_email
    assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"


def test_a_token_is_reused_until_shortly_before_expiry_then_refreshed() -> None:
    clock, endpoint = Clock(), Endpoint(expires_in=3600)
    tokens = ServiceAccountTokens(clock)

    async def run() -> list[str]:
        out = [await tokens.token(ACCOUNT, endpoint)]
        clock.now += 3600 - 226  # just before the 225 s refresh threshold
        out.append(await tokens.token(ACCOUNT, endpoint))
        clock.now += 2
        out.append(await tokens.token(ACCOUNT, endpoint))
        return out

    assert asyncio.run(run()) == ["tok-1", "tok-1", "tok-2"]
    assert tokens.fetches == 2


def test_a_short_lived_token_refreshes_at_half_its_life() -> None:
    clock, endpoint = Clock(), Endpoint(expires_in=2)
    tokens = ServiceAccountTokens(clock)

    async def run() -> list[str]:
        first = await tokens.token(ACCOUNT, endpoint)
        clock.now += 0.9
        same = await tokens.token(ACCOUNT, endpoint)
        clock.now += 0.2
        return [first, same, await tokens.token(ACCOUNT, endpoint)]

    assert asyncio.run(run()) == ["tok-1", "tok-1", "tok-2"]


def test_concurrent_requests_share_one_refresh() -> None:
    endpoint = Endpoint()
    endpoint.gate = asyncio.Event()
    tokens = ServiceAccountTokens()

    async def run() -> list[str]:
        waiting = [asyncio.ensure_future(tokens.token(ACCOUNT, endpoint)) for _ in range(5)]
        await asyncio.sleep(0)
        assert endpoint.gate is not None
        endpoint.gate.set()
        return list(await asyncio.gather(*waiting))

    assert asyncio.run(run()) == ["tok-1"] * 5
    assert len(endpoint.forms) == 1


def test_a_failed_refresh_keeps_a_valid_token_and_fails_once_it_expired() -> None:
    clock, endpoint = Clock(), Endpoint(expires_in=1000)
    tokens = ServiceAccountTokens(clock)

    async def run() -> tuple[str, str]:
        first = await tokens.token(ACCOUNT, endpoint)
        endpoint.fail = OSError("connection refused")
        clock.now += 900  # in the refresh window, still valid
        kept = await tokens.token(ACCOUNT, endpoint)
        clock.now += 200  # expired
        with pytest.raises(TokenError) as failed:
            await tokens.token(ACCOUNT, endpoint)
        assert "sa@p.iam.gserviceaccount.com" in str(failed.value) and "PRIVATE" not in str(failed.value)
        return first, kept

    assert asyncio.run(run()) == ("tok-1", "tok-1")


@pytest.mark.parametrize("status", [400, 500])
def test_an_error_answer_is_a_token_error(status: int) -> None:
    endpoint = Endpoint()
    endpoint.status = status
    with pytest.raises(TokenError, match=f"answered {status}"):
        asyncio.run(ServiceAccountTokens().token(ACCOUNT, endpoint))
