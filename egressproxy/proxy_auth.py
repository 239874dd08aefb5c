"""Proxy authentication: `HTTPListenerPolicy.basicAuth` verifies the workload's `Proxy-Authorization`.

Without a basicAuth policy the Basic user is taken as the identity unverified (it attributes, it does not
authorise; DESIGN.md section 5). With one attached to the gateway (or the listener), the credential is checked
against the htpasswd in the Secret's `.htpasswd` key (bcrypt, `{SHA}` and `$apr1$` entries, as Apache writes
them) and a missing or wrong one is a 407 with `Proxy-Authenticate`. The htpasswd tables are compiled with the
snapshot (`egressproxy/compiler/htpasswd_tables.py`): an entry of an unknown scheme is a validation problem there,
never a clear-text password here.

Hash checks are slow on purpose (bcrypt: ~60 ms), so they run in a worker thread, and a verified credential is
remembered (by a salted digest, never the password itself) for a short while: keep-alive clients send the same
header on every request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

from egressproxy.compiled_policies import BasicAuth
from egressproxy.flowrecord import Identity, Verdict
from egressproxy.snapshot import Snapshot

__all__ = ["BasicCredentials", "parse_basic", "ProxyAuthenticator", "REALM"]

REALM = "egressproxy"
REMEMBER_SECONDS = 300.0
REMEMBER_MAX = 4096


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    user: str
    password: str = ""

    @property
    def identity(self) -> Identity | None:
        namespace, sep, service_account = self.user.partition("/")
        return Identity(namespace, service_account) if sep and namespace and service_account else None


def parse_basic(value: str | None) -> BasicCredentials | None:
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, _, password = decoded.partition(":")
    return BasicCredentials(user, password)


class ProxyAuthenticator:
    """The remembered good credentials; which listener requires which htpasswd is the snapshot's
    (`Snapshot.compiled.basic_auth_for`, parsed once by the compiler)."""

    def __init__(self) -> None:
        self._generation = -1
        self._remembered: OrderedDict[bytes, float] = OrderedDict()
        self._salt = os.urandom(16)

    def _policy(self, snapshot: Snapshot, listener: str | None) -> BasicAuth | None:
        if snapshot.generation != self._generation:
            self._generation = snapshot.generation
            self._remembered.clear()  # a rotated htpasswd must not keep honouring a removed user
        return snapshot.compiled.basic_auth_for(listener)

    def required(self, snapshot: Snapshot, listener: str | None) -> bool:
        return self._policy(snapshot, listener) is not None

    async def verify(
        self, snapshot: Snapshot, listener: str | None, header: str | None
    ) -> tuple[Identity | None, Verdict | None]:
        """(the verified identity, None), or (None, the 407 denial). Without a policy: nothing to verify."""
        policy = self._policy(snapshot, listener)
        credentials = parse_basic(header)
        if policy is None:
            identity = credentials.identity if credentials else None
            return (replace(identity, source="proxy Basic user, unverified: no basicAuth policy") if identity else None), None
        if credentials is None:
            return None, _challenge(policy, "proxy authentication required")
        # Keyed by the policy too: a credential one listener's table accepts proves nothing on another listener.
        key = hashlib.sha256(
            b"\0".join((self._salt, policy.policy.encode(), credentials.user.encode(), credentials.password.encode()))
        ).digest()
        until = self._remembered.get(key)
        if until is None or until < time.monotonic():
            ok = await asyncio.to_thread(policy.check, credentials.user, credentials.password)
            if not ok:
                return None, _challenge(policy, "proxy credentials are not valid")
            self._remember(key)
        identity = credentials.identity or Identity("unknown", credentials.user)
        return replace(identity, source=f"proxy Basic user verified by {policy.policy}"), None

    def _remember(self, key: bytes) -> None:
        self._remembered[key] = time.monotonic() + REMEMBER_SECONDS
        self._remembered.move_to_end(key)
        while len(self._remembered) > REMEMBER_MAX:
            self._remembered.popitem(last=False)


def _challenge(policy: BasicAuth, message: str) -> Verdict:
    return Verdict.deny("proxy-auth-required", policy.policy, message, status_code=407)
