"""Per-connection budgets for the HTTP/2 frames a client can make the gateway work for without a request.

A stream opened and reset at once (rapid reset, CVE-2023-44487) never counts against
SETTINGS_MAX_CONCURRENT_STREAMS, yet each one costs the gateway a flow and a hook run; a PING or SETTINGS frame
costs an acknowledgement; a stream beyond SETTINGS_MAX_CONCURRENT_STREAMS costs a header decode and a
REFUSED_STREAM answer. None of them is bounded by the protocol, so each connection gets a budget per kind
over a sliding window, and a client that spends it is cut off (GOAWAY ENHANCE_YOUR_CALM, then close) and counted
under `egress_client_refusals_total{reason}` with the reason named here.

Rules (checked by `H2AbuseGuard.observe`, one call per frame received from the client):
- more than `max_resets` streams reset by the client within `window` seconds -> `h2-rapid-reset`
- more than `max_pings` PING frames within `window` seconds -> `h2-ping-flood`
- more than `max_settings` SETTINGS frames within `window` seconds -> `h2-settings-flood`
- more than `max_refused` streams refused for the concurrency limit within `window` seconds -> `h2-stream-flood`

The budgets are generous for real clients (browsers and gRPC cancel a few streams and ping every few seconds)
and small against floods, which send thousands per second. Memory per connection is bounded: each kind keeps at
most its budget plus one timestamp.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

__all__ = ["DEFAULT_LIMITS", "FrameKind", "H2AbuseGuard", "H2Limits", "SlidingCount"]


class FrameKind(Enum):
    """What the client sent; the value is the refusal reason when its budget is spent."""

    RESET = "h2-rapid-reset"
    PING = "h2-ping-flood"
    SETTINGS = "h2-settings-flood"
    REFUSED = "h2-stream-flood"


@dataclass(frozen=True)
class H2Limits:
    """Budgets per connection: at most `max_*` frames of a kind within any `window` seconds."""

    window: float = 10.0
    max_resets: int = 200
    max_pings: int = 100
    max_settings: int = 100
    max_refused: int = 100

    def budget(self, kind: FrameKind) -> int:
        budgets = {
            FrameKind.RESET: self.max_resets,
            FrameKind.PING: self.max_pings,
            FrameKind.SETTINGS: self.max_settings,
            FrameKind.REFUSED: self.max_refused,
        }
        return budgets[kind]


DEFAULT_LIMITS = H2Limits()


class SlidingCount:
    """Counts events within the last `window` seconds, keeping at most `limit + 1` timestamps."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque(maxlen=limit + 1)

    def add(self, now: float) -> bool:
        """Record one event at `now`; True when more than `limit` events fall within the window ending at `now`."""
        self._times.append(now)
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        return len(self._times) > self.limit


class H2AbuseGuard:
    """The budgets of one client connection (not thread-safe: one event loop drives a connection)."""

    def __init__(self, limits: H2Limits = DEFAULT_LIMITS, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._counts = {kind: SlidingCount(limits.budget(kind), limits.window) for kind in FrameKind}
        self.refused: FrameKind | None = None

    def observe(self, kind: FrameKind) -> FrameKind | None:
        """Count one frame of `kind`; the kind whose budget is spent (once, then None: the connection is cut)."""
        if self.refused is not None:
            return None
        if self._counts[kind].add(self._clock()):
            self.refused = kind
            return kind
        return None
