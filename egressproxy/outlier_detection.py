"""Outlier detection settings (agentgateway's `outlierDetection`, here an extension field of a kgateway Backend).

```yaml
kind: Backend
spec:
  outlierDetection:
    consecutive5xx: 3        # consecutive failures (5xx, connect failure, TLS failure, timeout) that eject
    interval: 10s            # ejections are reviewed at this tick: one ends at the first tick after its time
    baseEjectionTime: 30s    # first ejection; the n-th lasts n x this, at most 300s
    maxEjectionPercent: 10   # never more than this share of the Backend's candidates at once (at least one)
```

The counting and ejecting is egressproxy/provider_health.py; this module holds the compiled form and the
lookup from a candidate. Ejection applies where candidates are walked (the failover hop: AI failover and
TrafficPolicy retries); a request sent straight to its only candidate has nothing to fail over to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from egressproxy.upstreams import Upstream

__all__ = ["OUTLIER_FIELDS", "OutlierDetection", "compile_outlier", "outlier_of"]

# The seed's fields this build enforces (the success-rate ones are accepted and reported Unsupported).
OUTLIER_FIELDS = ("consecutive5xx", "interval", "baseEjectionTime", "maxEjectionPercent")


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """A Backend's compiled `outlierDetection` (defaults as Envoy's)."""

    consecutive_5xx: int = 5
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10
    max_ejection_time: float = 300.0  # Envoy's default cap on base x count

    def to_dump(self) -> dict[str, object]:
        return {
            "consecutive5xx": self.consecutive_5xx,
            "interval": self.interval,
            "baseEjectionTime": self.base_ejection_time,
            "maxEjectionPercent": self.max_ejection_percent,
        }


def compile_outlier(spec: Mapping[str, Any] | None) -> OutlierDetection | None:
    if spec is None:
        return None
    default = OutlierDetection()
    return OutlierDetection(
        consecutive_5xx=int(spec.get("consecutive5xx", default.consecutive_5xx)),
        interval=float(spec.get("interval", default.interval)),
        base_ejection_time=float(spec.get("baseEjectionTime", default.base_ejection_time)),
        max_ejection_percent=int(spec.get("maxEjectionPercent", default.max_ejection_percent)),
    )


def outlier_of(upstream: "Upstream") -> OutlierDetection | None:
    """The outlier detection of a candidate's Backend, else of the AIBackend whose groups named it (None: never
    ejected)."""
    own = upstream.backend.outlier if upstream.backend is not None else None
    return own if own is not None or upstream.via is None else upstream.via.outlier
