"""The bodies and headers of the gateway's own answers (DESIGN.md section 4: a contract).

Denials: status 403 (or an EgressDenyPolicy's), header `x-egress-denied: <reason>`, JSON
`{"error", "reason", "policy"}`. Gateway errors: 502/504 with `x-egress-error: <reason>` and the same JSON shape.
A 407 always carries `Proxy-Authenticate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from egressproxy.flowrecord import Verdict

__all__ = ["GatewayAnswer", "client_refusal", "denial", "gateway_error", "ERROR_STATUS"]

ERROR_STATUS = {
    "upstream-unreachable": 502,
    "upstream-tls-invalid": 502,
    "upstream-timeout": 504,
    "no-healthy-backend": 503,
}

_DENY_MESSAGES = {
    "no-route": "no route allows this destination",
    "route-denied": "denied by policy",
    "destination-address-denied": "destination address is not allowed",
    "sni-mismatch": "TLS SNI does not match the CONNECT authority",
    "host-mismatch": "Host header does not match the connection's destination",
    "proxy-auth-required": "proxy authentication required",
    "invalid-host": "the destination host is not a valid name or address",
    # client limits (egressproxy/client_limits.py): answered before any flow exists
    "request-header-too-large": "request head is larger than the gateway accepts",
    "request-header-too-many": "request has more header lines than the gateway accepts",
    # a request head that does not parse, or parses into something no origin should get (request_head.py)
    "malformed-request": "the request head is malformed",
}


@dataclass(frozen=True, slots=True)
class GatewayAnswer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _json(error: str, reason: str, policy: str) -> bytes:
    return (json.dumps({"error": error, "reason": reason, "policy": policy}) + "\n").encode()


def denial(verdict: Verdict) -> GatewayAnswer:
    message = verdict.message if verdict.message and verdict.message != verdict.reason else ""
    error = message or _DENY_MESSAGES.get(verdict.reason, "denied by the egress gateway")
    headers: list[tuple[str, str]] = [("content-type", "application/json"), ("x-egress-denied", verdict.reason)]
    if verdict.status_code == 407:
        headers.append(("proxy-authenticate", 'Basic realm="egressproxy"'))
    return GatewayAnswer(verdict.status_code, tuple(headers), _json(error, verdict.reason, verdict.policy))


def gateway_error(reason: str, detail: str, policy: str = "") -> GatewayAnswer:
    status = ERROR_STATUS.get(reason, 502)
    headers = (("content-type", "application/json"), ("x-egress-error", reason))
    return GatewayAnswer(status, headers, _json(detail, reason, policy))


def client_refusal(status: int, reason: str) -> GatewayAnswer:
    """A request head refused by the client limits (431, or 400 `malformed-request`); the connection then closes."""
    headers = (("content-type", "application/json"), ("x-egress-denied", reason), ("connection", "close"))
    return GatewayAnswer(status, headers, _json(_DENY_MESSAGES.get(reason, "request refused"), reason, ""))
