"""Client limits (DESIGN.md 4.2): how much of a request head, how long a wait, how many connections per address.

An egress gateway sits on every outbound call, so a single client must not be able to pin its memory or its
connection slots. The rules here are pure functions over a frozen `ClientLimits` (EgressGateway
`spec.clientLimits`, compiled once per configuration generation); the mitmproxy side (egressproxy/engine/
mitmproxy_boundary.py and addons/client_limits.py) only measures and applies them.

Two clocks, as Envoy keeps them (`request_headers_timeout` and the connection `idle_timeout`):
- the **idle** clock runs while a client connection waits for the first byte of its next request head (from
  accept, or from the end of the previous response on a keep-alive connection);
- the **head** clock runs from the first byte of a request head until the head is complete.
A tunnel (CONNECT passthrough, TCP relay, WebSocket) or a response still streaming is never on either clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ClientLimits",
    "ConnectionCounts",
    "DEFAULT_LIMITS",
    "HEAD_TOO_LARGE",
    "MALFORMED",
    "TIMEOUT_HEAD",
    "TIMEOUT_IDLE",
    "TOO_MANY_CONNECTIONS",
    "SENT_AHEAD",
    "TOO_MANY_HEADERS",
    "ahead_limit",
    "head_refusal",
    "overdue",
]

# Refusal reasons: the `reason` of the JSON body, the `x-egress-denied` header and the metric label.
HEAD_TOO_LARGE = "request-header-too-large"
TOO_MANY_HEADERS = "request-header-too-many"
MALFORMED = "malformed-request"
TIMEOUT_HEAD = "request-head-timeout"
TIMEOUT_IDLE = "idle-timeout"
TOO_MANY_CONNECTIONS = "too-many-connections"
SENT_AHEAD = "sent-ahead"

# What a client may send ahead of a response when `maxRequestHeadBytes` is off.
_AHEAD_WHEN_UNLIMITED = 1 << 20


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """The compiled `spec.clientLimits` of the served EgressGateway (0 disables a limit)."""

    max_request_head_bytes: int = 65536
    max_request_headers: int = 100
    request_head_timeout: float = 60.0
    idle_timeout: float = 60.0
    max_connections_per_client: int = 0

    def to_dump(self) -> dict[str, Any]:
        return {
            "maxRequestHeadBytes": self.max_request_head_bytes,
            "maxRequestHeaders": self.max_request_headers,
            "requestHeadTimeout": self.request_head_timeout,
            "idleTimeout": self.idle_timeout,
            "maxConnectionsPerClient": self.max_connections_per_client,
        }


DEFAULT_LIMITS = ClientLimits()


def head_refusal(limits: ClientLimits, head_bytes: int, header_lines: int | None) -> str | None:
    """Why a request head is refused, or None.

    `head_bytes` counts the request line and the header lines read so far; `header_lines` is the number of header
    lines once the head is complete (None while it is still arriving). A head still arriving is refused as soon as
    it is over the byte limit, so the gateway never holds much more than the limit.
    """
    if limits.max_request_head_bytes and head_bytes > limits.max_request_head_bytes:
        return HEAD_TOO_LARGE
    if header_lines is not None and limits.max_request_headers and header_lines > limits.max_request_headers:
        return TOO_MANY_HEADERS
    return None


def ahead_limit(limits: ClientLimits) -> int:
    """Bytes a client may send while its request waits for the response (a pipelined next head), at least 64 KiB.

    HTTP/1 answers one request at a time; what comes meanwhile is held until the response ends. A pipelined
    request head fits in `maxRequestHeadBytes`; more than that is a client filling the gateway's memory.
    """
    if not limits.max_request_head_bytes:
        return _AHEAD_WHEN_UNLIMITED
    return max(limits.max_request_head_bytes, 1 << 16)


def overdue(limits: ClientLimits, now: float, waiting_since: float, head_since: float | None) -> str | None:
    """Why a connection waiting for a request head is closed at `now`, or None (times from one monotonic clock).

    `waiting_since` is when the wait began (accept or end of the previous response), `head_since` when the first
    byte of the head arrived (None: no byte yet, the connection is idle).
    """
    if head_since is None:
        if limits.idle_timeout and now - waiting_since >= limits.idle_timeout:
            return TIMEOUT_IDLE
        return None
    if limits.request_head_timeout and now - head_since >= limits.request_head_timeout:
        return TIMEOUT_HEAD
    return None


class ConnectionCounts:
    """Open client connections per source address, for `maxConnectionsPerClient` (one event loop: no lock)."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def admit(self, address: str, cap: int) -> bool:
        """Count a new connection from `address` unless `cap` (> 0) connections from it are already open."""
        if cap and self._open[address] >= cap:
            return False
        self._open[address] += 1
        return True

    def release(self, address: str) -> None:
        if self._open[address] <= 1:
            self._open.pop(address, None)
        else:
            self._open[address] -= 1

    def open(self, address: str) -> int:
        return self._open[address]
