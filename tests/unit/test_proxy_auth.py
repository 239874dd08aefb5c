"""Proxy credentials: parsing, and verification against an htpasswd Secret attached by HTTPListenerPolicy."""

from __future__ import annotations

import asyncio
import base64
import textwrap

from passlib.hash import bcrypt

from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_text
from egressproxy.flowrecord import Identity
from egressproxy.proxy_auth import ProxyAuthenticator, parse_basic

GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  listeners: [{name: http, protocol: HTTP}]
"""


def _header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _snapshot(with_policy: bool):
    text = textwrap.dedent(GATEWAY)
    if with_policy:
        entry = "team-a/billing:" + bcrypt.using(rounds=4).hash("pw")
        text += textwrap.dedent(
            f"""
            ---
            apiVersion: gateway.kgateway.dev/v1alpha1
            kind: HTTPListenerPolicy
            metadata: {{name: auth}}
            spec:
              targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}}]
              basicAuth: {{credentialsSecretRef: {{name: users}}}}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {{name: users}}
            stringData:
              .htpasswd: "{entry}"
            """
        )
    loaded = load_text(text, "auth.yaml")
    assert loaded.ok, loaded.problems
    compiled = compile_config(loaded.resources)
    assert compiled.ok, compiled.problems
    return compiled.snapshot


def test_parse_basic_reads_user_and_password_and_rejects_garbage() -> None:
    creds = parse_basic(_header("team-a/billing", "p:w"))
    assert creds is not None and (creds.user, creds.password) == ("team-a/billing", "p:w")
    assert creds.identity == Identity("team-a", "billing")
    assert parse_basic("Bearer x") is None and parse_basic("Basic !!!") is None and parse_basic(None) is None


def test_without_a_policy_the_user_attributes_but_is_not_checked() -> None:
    auth = ProxyAuthenticator()
    identity, challenge = asyncio.run(auth.verify(_snapshot(False), "http", _header("ns/sa", "anything")))
    assert identity == Identity("ns", "sa") and challenge is None
    assert asyncio.run(auth.verify(_snapshot(False), "http", None)) == (None, None)


def test_with_a_policy_only_valid_credentials_pass() -> None:
    snapshot, auth = _snapshot(True), ProxyAuthenticator()
    identity, challenge = asyncio.run(auth.verify(snapshot, "http", _header("team-a/billing", "pw")))
    assert identity == Identity("team-a", "billing") and challenge is None
    for header in (None, _header("team-a/billing", "nope"), _header("other/x", "pw")):
        identity, challenge = asyncio.run(auth.verify(snapshot, "http", header))
        assert identity is None and challenge is not None
        assert (challenge.status_code, challenge.reason, challenge.policy) == (407, "proxy-auth-required", "HTTPListenerPolicy/default/auth")


def test_a_credential_remembered_on_one_listener_is_checked_again_on_another() -> None:
    """Listener-scoped basicAuth beats the gateway's; a remembered good credential does not cross tables."""
    gateway_entry = "team-a/billing:" + bcrypt.using(rounds=4).hash("pw")
    admin_entry = "ops/admin:" + bcrypt.using(rounds=4).hash("ops")
    text = textwrap.dedent(
        f"""
        apiVersion: clrk.apoxy.dev/v1alpha1
        kind: EgressGateway
        metadata: {{name: eg}}
        spec:
          listeners: [{{name: http, protocol: HTTP}}, {{name: admin, protocol: HTTP, port: 8081}}]
        ---
        apiVersion: gateway.kgateway.dev/v1alpha1
        kind: HTTPListenerPolicy
        metadata: {{name: auth}}
        spec:
          targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}}]
          basicAuth: {{credentialsSecretRef: {{name: users}}}}
        ---
        apiVersion: gateway.kgateway.dev/v1alpha1
        kind: HTTPListenerPolicy
        metadata: {{name: admin-auth}}
        spec:
          targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: eg, sectionName: admin}}]
          basicAuth: {{credentialsSecretRef: {{name: admins}}}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: users}}
        stringData: {{.htpasswd: "{gateway_entry}"}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: admins}}
        stringData: {{.htpasswd: "{admin_entry}"}}
        """
    )
    loaded = load_text(text, "auth.yaml")
    compiled = compile_config(loaded.resources)
    assert compiled.ok and compiled.snapshot is not None, compiled.problems
    snapshot, auth = compiled.snapshot, ProxyAuthenticator()
    good = _header("team-a/billing", "pw")
    assert asyncio.run(auth.verify(snapshot, "http", good)) == (Identity("team-a", "billing"), None)
    identity, challenge = asyncio.run(auth.verify(snapshot, "admin", good))
    assert identity is None and challenge is not None and challenge.policy == "HTTPListenerPolicy/default/admin-auth"
    assert asyncio.run(auth.verify(snapshot, "admin", _header("ops/admin", "ops"))) == (Identity("ops", "admin"), None)
