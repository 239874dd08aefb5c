"""egressproxy/credentials.py: which credential applies to a request, and what a Credential removes.

Precedence: the candidate's provider credential, else the most specific CredentialInjectionPolicy scope,
Backend > route rule > route > listener > gateway.
"""

from __future__ import annotations

from types import MappingProxyType

import pytest

from egressproxy.config.problems import ObjectRef
from egressproxy.credentials import AwsSigV4, Credential, CredentialTable, SecretHeader, SecretQuery
from egressproxy.snapshot import AIProvider, Backend
from egressproxy.upstreams import Upstream

BACKEND = Backend(ObjectRef("Backend", "ns", "b"), "Static")
ROUTE = ObjectRef("HTTPRoute", "ns", "r")
PROVIDER = AIProvider("openai", "openai", auth_kind="Inline", auth_inline="sk")
SCOPES = {
    ("backend", BACKEND.ref): Credential("backend"),
    ("rule", (ROUTE, 1)): Credential("rule"),
    ("route", ROUTE): Credential("route"),
    ("listener", "https"): Credential("listener"),
    ("gateway", None): Credential("gateway"),
}


def source(table: CredentialTable, upstream: Upstream, rule: int | None = None, listener: str | None = "https") -> str | None:
    found = table.for_request(upstream, ROUTE, rule, listener)
    return found.source if found is not None else None


@pytest.mark.parametrize(
    ("drop", "upstream", "rule", "expected"),
    [
        ((), Upstream("h", 443, backend=BACKEND), 1, "backend"),
        ((("backend", BACKEND.ref),), Upstream("h", 443, backend=BACKEND), 1, "rule"),
        ((("backend", BACKEND.ref),), Upstream("h", 443, backend=BACKEND), 0, "route"),
        ((), Upstream("h", 443), None, "route"),
        ((("route", ROUTE),), Upstream("h", 443), None, "listener"),
        ((("route", ROUTE), ("listener", "https")), Upstream("h", 443), None, "gateway"),
    ],
)
def test_the_most_specific_scope_wins(drop: tuple, upstream: Upstream, rule: int | None, expected: str) -> None:
    scopes = {k: v for k, v in SCOPES.items() if k not in drop}
    assert source(CredentialTable(scopes=MappingProxyType(scopes)), upstream, rule) == expected


def test_a_providers_own_credential_beats_every_policy_and_a_provider_without_one_falls_back() -> None:
    table = CredentialTable(MappingProxyType({(BACKEND.ref, PROVIDER): Credential("provider")}), MappingProxyType(SCOPES))
    assert source(table, Upstream("h", 443, backend=BACKEND, provider=PROVIDER)) == "provider"
    other = AIProvider("anthropic", "anthropic")
    assert source(table, Upstream("h", 443, backend=BACKEND, provider=other)) == "backend"
    elsewhere = Backend(ObjectRef("Backend", "ns", "other"), "AI")  # the same provider block in another Backend
    assert source(table, Upstream("h", 443, backend=elsewhere, provider=PROVIDER)) == "route"


def test_no_credential_at_all() -> None:
    assert CredentialTable().for_request(Upstream("h", 443), None, None, None) is None


def test_what_a_credential_removes_first() -> None:
    cred = Credential("t", headers=(SecretHeader("x-partner", "v"), SecretHeader("anthropic-version", "d", True)),
                      query=(SecretQuery("token", "v"),), sigv4=AwsSigV4("a", "s"))
    assert cred.removes == ("authorization", "x-api-key", "api-key", "x-goog-api-key", "x-partner",
                            "x-amz-date", "x-amz-security-token", "x-amz-content-sha256")
    assert cred.removes_query == ("key", "token")
    # computed when the credential is compiled, not on every request that reads them
    assert cred.removes is cred.removes and cred.removes_query is cred.removes_query
    assert "x-other" in cred.merged(Credential("u", headers=(SecretHeader("x-other", "w"),))).removes


def test_cleartext_is_allowed_only_for_annotated_routes() -> None:
    table = CredentialTable(cleartext_routes=frozenset({ROUTE}))
    assert table.cleartext_allowed(ROUTE)
    assert not table.cleartext_allowed(ObjectRef("HTTPRoute", "ns", "other"))
    assert not table.cleartext_allowed(None)
