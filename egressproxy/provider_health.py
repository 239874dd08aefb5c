"""The health view of upstream candidates, shared by every request of one worker process.

Two things keep a candidate out of a failover walk for a while:

- **cooldown**: a provider that answered 429/5xx, refused a connection, failed TLS or timed out is skipped for
  the time `retryable()` gave (its Retry-After and reset headers, capped at 5m, else 5s);
- **ejection** (outlier detection, agentgateway's `outlierDetection`): after `consecutive5xx` consecutive
  failures a candidate is ejected for `baseEjectionTime` x the number of times it was ejected, never more than
  `maxEjectionPercent` of a Backend's candidates at once, and comes back at the first `interval` tick after that
  time (as Envoy sweeps its ejections every interval).

Each worker process keeps its own view (like Envoy's per-worker outlier state): nothing is shared between
`--workers`. Keys name a candidate by Backend, provider and address, so a reload that keeps them keeps their
health. The clock is injectable (monotonic seconds).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from egressproxy.outlier_detection import OutlierDetection
from egressproxy.upstreams import Upstream

__all__ = ["CandidateKey", "Eligibility", "OutlierDetection", "ProviderHealth", "candidate_key"]

CandidateKey = tuple[str, str, str, int]  # (backend ns/name or "", provider name or "", host, port)


def candidate_key(upstream: Upstream) -> CandidateKey:
    provider = upstream.provider.name if upstream.provider is not None else ""
    return (upstream.backend_name or "", provider, upstream.host, upstream.port)


@dataclass(frozen=True, slots=True)
class Eligibility:
    """Whether a candidate may be tried now; when not, why and for how long."""

    ok: bool
    reason: str = ""  # cooled-down | ejected
    remaining: float = 0.0  # seconds until it may be tried again


@dataclass(slots=True)
class _State:
    cooled_until: float = 0.0
    cooldown_reason: str = ""
    consecutive_failures: int = 0
    ejected_until: float = 0.0
    ejections: int = 0


@dataclass(eq=False)
class ProviderHealth:
    clock: Callable[[], float] = time.monotonic
    on_ejection: Callable[[CandidateKey], None] | None = None
    _states: dict[CandidateKey, _State] = field(default_factory=dict)

    def eligibility(self, key: CandidateKey) -> Eligibility:
        state = self._states.get(key)
        if state is None:
            return Eligibility(True)
        now = self.clock()
        if state.ejected_until > now:
            return Eligibility(False, "ejected", state.ejected_until - now)
        if state.cooled_until > now:
            return Eligibility(False, "cooled-down", state.cooled_until - now)
        return Eligibility(True)

    def cool_down(self, key: CandidateKey, seconds: float, reason: str) -> None:
        """Skip `key` for `seconds` (a longer cooldown already running is kept)."""
        if seconds <= 0:
            return
        state = self._states.setdefault(key, _State())
        until = self.clock() + seconds
        if until > state.cooled_until:
            state.cooled_until, state.cooldown_reason = until, reason

    def succeeded(self, key: CandidateKey) -> None:
        state = self._states.get(key)
        if state is not None:
            state.consecutive_failures = 0

    def failed(self, key: CandidateKey, outlier: OutlierDetection | None, peers: tuple[CandidateKey, ...] = ()) -> bool:
        """Count a failure (5xx, connect failure, timeout) of `key`; True when it was ejected by it.

        `peers` are the candidates of the same Backend (`key` among them), for `maxEjectionPercent`.
        """
        state = self._states.setdefault(key, _State())
        state.consecutive_failures += 1
        if outlier is None or outlier.consecutive_5xx <= 0 or state.consecutive_failures < outlier.consecutive_5xx:
            return False
        now = self.clock()
        if state.ejected_until > now or not self._may_eject(key, outlier, peers or (key,), now):
            return False
        state.ejections += 1
        length = min(outlier.base_ejection_time * state.ejections, max(outlier.max_ejection_time, outlier.base_ejection_time))
        interval = outlier.interval if outlier.interval > 0 else 0.0
        ticks = math.ceil(length / interval) * interval if interval else length
        state.ejected_until = now + ticks
        state.consecutive_failures = 0
        if self.on_ejection is not None:
            self.on_ejection(key)
        return True

    def _may_eject(self, key: CandidateKey, outlier: OutlierDetection, peers: tuple[CandidateKey, ...], now: float) -> bool:
        if outlier.max_ejection_percent <= 0:
            return False
        ejected = sum(1 for p in peers if p != key and (s := self._states.get(p)) is not None and s.ejected_until > now)
        allowed = max(1, math.floor(len(peers) * outlier.max_ejection_percent / 100))
        return ejected < allowed

    def unavailable(self) -> list[dict[str, object]]:
        """Every candidate that is cooled down or ejected now, for the admin `/stats` (what `explain`, which runs
        without the gateway's state, cannot show)."""
        out: list[dict[str, object]] = []
        for key in list(self._states):
            eligibility = self.eligibility(key)
            if not eligibility.ok:
                backend, provider, host, port = key
                out.append({"backend": backend or None, "provider": provider or None, "address": f"{host}:{port}",
                            "state": eligibility.reason, "seconds": round(eligibility.remaining, 1)})
        return out

    def describe(self, key: CandidateKey) -> str | None:
        """For `explain`: `cooled down for 3.2s` / `ejected for 30.0s`, or None when it may be tried."""
        eligibility = self.eligibility(key)
        if eligibility.ok:
            return None
        return f"{eligibility.reason.replace('-', ' ')} for {eligibility.remaining:.1f}s"
