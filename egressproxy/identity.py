"""Workload identity from the proxy credentials (DESIGN.md section 5).

Without an HTTPListenerPolicy.basicAuth, the `Proxy-Authorization` Basic user `namespace/serviceaccount` is
taken unverified: it attributes traffic, it never authorises it.
"""

from __future__ import annotations

import base64
import binascii

from egressproxy.flowrecord import Identity

__all__ = ["identity_from_proxy_authorization"]


def identity_from_proxy_authorization(value: str | None) -> Identity | None:
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user = decoded.partition(":")[0]
    namespace, sep, service_account = user.partition("/")
    if not sep or not namespace or not service_account:
        return None
    return Identity(namespace, service_account)
