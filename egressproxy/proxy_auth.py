"""Proxy authentication: `HTTPListenerPolicy.basicAuth` verifies the workload's `Proxy-Authorization`.

Without a basicAuth policy the Basic user is taken as the identity unverified (it attributes, it does not
authorise; DESIGN.md section 5). With one attached to the gateway (or the listener), the credential is checked
against the htpasswd in the Secret's `.htpasswd` key (bcrypt, `{SHA}` and `$apr1$` entries, as Apache writes
them) and a missing or wrong one is a 407 with `Proxy-Authenticate`.

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
from dataclasses import dataclass

from passlib.apache import HtpasswdFile

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


@dataclass(frozen=True, slots=True)
class _Policy:
    ref: str  # HTTPListenerPolicy/ns/name
    htpasswd: HtpasswdFile


class ProxyAuthenticator:
    """Per snapshot generation: which listener requires which htpasswd; and the remembered good credentials."""

    def __init__(self) -> None:
        self._generation = -1
        self._policies: dict[str | None, _Policy | None] = {}
        self._remembered: OrderedDict[bytes, float] = OrderedDict()
        self._salt = os.urandom(16)

    def _policy(self, snapshot: Snapshot, listener: str | None) -> _Policy | None:
        if snapshot.generation != self._generation:
            self._generation, self._policies = snapshot.generation, {}
            self._remembered.clear()
        if listener not in self._policies:
            self._policies[listener] = _load(snapshot, listener)
        return self._policies[listener]

    def required(self, snapshot: Snapshot, listener: str | None) -> bool:
        return self._policy(snapshot, listener) is not None

    async def verify(
        self, snapshot: Snapshot, listener: str | None, header: str | None
    ) -> tuple[Identity | None, Verdict | None]:
        """(the verified identity, None), or (None, the 407 denial). Without a policy: nothing to verify."""
        policy = self._policy(snapshot, listener)
        credentials = parse_basic(header)
        if policy is None:
            return (credentials.identity if credentials else None), None
        if credentials is None:
            return None, _challenge(policy, "proxy authentication required")
        key = hashlib.sha256(self._salt + credentials.user.encode() + b"\0" + credentials.password.encode()).digest()
        until = self._remembered.get(key)
        if until is None or until < time.monotonic():
            ok = await asyncio.to_thread(policy.htpasswd.check_password, credentials.user, credentials.password)
            if not ok:
                return None, _challenge(policy, "proxy credentials are not valid")
            self._remember(key)
        identity = credentials.identity or Identity("unknown", credentials.user)
        return identity, None

    def _remember(self, key: bytes) -> None:
        self._remembered[key] = time.monotonic() + REMEMBER_SECONDS
        self._remembered.move_to_end(key)
        while len(self._remembered) > REMEMBER_MAX:
            self._remembered.popitem(last=False)


def _challenge(policy: _Policy, message: str) -> Verdict:
    return Verdict.deny("proxy-auth-required", policy.ref, message, status_code=407)


def _load(snapshot: Snapshot, listener: str | None) -> _Policy | None:
    for attached in snapshot.policies.policies("HTTPListenerPolicy", listener=listener):
        basic = attached.spec.get("basicAuth")
        if not basic:
            continue
        ref = basic.get("credentialsSecretRef") or {}
        secret = snapshot.secret(ref.get("namespace") or attached.ref.namespace, ref.get("name", ""))
        if secret is None or ".htpasswd" not in secret:
            continue  # the compiler reports a missing Secret or key as a problem; never reached when served
        htpasswd = HtpasswdFile.from_string(secret[".htpasswd"].decode("utf-8", "replace"))
        return _Policy(f"HTTPListenerPolicy/{attached.ref.namespace}/{attached.ref.name}", htpasswd)
    return None
