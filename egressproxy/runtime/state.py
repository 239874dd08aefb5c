"""The gateway's shared state: the serving snapshot, per-connection decisions, metrics and the resolver.

One instance per process, created by the runtime (or by `addons/egress.py` under mitmweb) and handed to every
addon. Swapping the snapshot is one reference assignment: a flow that already holds the old snapshot finishes
on it, every new decision reads the new one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from egressproxy.deferred_work import DeferredWork
from egressproxy.denial_log import DenialLog
from egressproxy.dns_bindings import DnsBindings
from egressproxy.dialer import Dialer
from egressproxy.engine.destinations import DestinationCheck
from egressproxy.flowrecord import ConnectionRecord
from egressproxy.metrics import GatewayMetrics, MetricsSink
from egressproxy.provider_health import CandidateKey, ProviderHealth, candidate_key
from egressproxy.proxy_auth import ProxyAuthenticator
from egressproxy.rate_limiter import RateLimiter
from egressproxy.resolver import Resolver
from egressproxy.sinks import Sink, Sinks
from egressproxy.upstream_hop import UpstreamHop
from egressproxy.upstreams import Upstream

if TYPE_CHECKING:
    from collections.abc import Callable

    from egressproxy.snapshot import Snapshot

__all__ = ["GatewayState", "ReloadStatus"]

log = logging.getLogger("egressproxy")


@dataclass(slots=True)
class ReloadStatus:
    generation: int = 0
    ok: bool = True
    problems: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


@dataclass(eq=False)
class GatewayState:
    data_dir: Path
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    snapshot: "Snapshot | None" = None
    last_reload: ReloadStatus = field(default_factory=ReloadStatus)
    connections: dict[str, ConnectionRecord] = field(default_factory=dict)
    listeners_bound: bool = False
    stopping: bool = False  # set when a stop signal starts the drain: /ready answers 503 from then on
    worker: int = 0  # this process's index under --workers (0: the one that supervises)
    dns_bindings: DnsBindings = field(default_factory=DnsBindings)  # IP -> name, from our DNS answers
    # The gateway's DNS resolver and its TTL cache (dial guard; later the DNS listener), sharing these metrics.
    resolver: Resolver = field(default=None)  # type: ignore[assignment]

    # The one dialer (destination check + upstream TLS) for the hooks and the gateway's own connections.
    dialer: Dialer = field(default=None)  # type: ignore[assignment]
    # name -> checked address, shared by the dial guard and the CONNECT gate (the dialer's destination check)
    destinations: DestinationCheck = field(default=None)  # type: ignore[assignment]
    # HTTPListenerPolicy.basicAuth, shared by the CONNECT gate and absolute-form HTTP
    proxy_auth: ProxyAuthenticator = field(default_factory=ProxyAuthenticator)
    # where finished connection and request records go (seam 5): metrics first; later sinks register here
    sinks: Sinks = field(default=None)  # type: ignore[assignment]
    # Finishing the client need not wait for (records to the sinks), run after the response is written; flushed
    # at graceful stop before the sinks stop (egressproxy/deferred_work.py)
    finishing: DeferredWork = field(default_factory=DeferredWork)
    # RateLimitPolicy counters: the Local store of this process and the Redis clients
    rate_limiter: RateLimiter = field(default=None)  # type: ignore[assignment]
    # Failover: the health view of candidates (cooldowns, ejections) and the in-process upstream hop
    health: ProviderHealth = field(default=None)  # type: ignore[assignment]
    hop: UpstreamHop = field(default=None)  # type: ignore[assignment]
    # Write each finished flow's decision trace (comment, marker, metadata) for a host that shows flows (mitmweb,
    # mitmdump -s addons/egress.py). `egressproxy run` keeps no flows, so its master turns this off and no
    # request pays for text nobody reads.
    flow_traces: bool = True
    # Snapshot -> the request steps idle under it (runtime/idle_steps.py); the gateway's addons set the real one.
    idle_steps: "Callable[[Snapshot], frozenset[str]]" = field(default=lambda snapshot: frozenset())
    # The hot-path caches' figures for GET /stats (minted leaves, upstream TLS sessions); set by the gateway's addons.
    cache_stats: "Callable[[], dict[str, object]]" = field(default=lambda: {})

    def __post_init__(self) -> None:
        if self.sinks is None:
            self.sinks = Sinks(on_error=self._sink_failed)
            self.sinks.register(MetricsSink(self.metrics, self.worker))
            self.sinks.register(DenialLog())
        if self.resolver is None:
            self.resolver = Resolver(self.metrics)
        if self.dialer is None:
            self.dialer = Dialer(self.resolver, self.metrics)
        if self.destinations is None:
            self.destinations = self.dialer.destinations
        if self.rate_limiter is None:
            self.rate_limiter = RateLimiter(self.metrics)
        if self.health is None:
            self.health = ProviderHealth(on_ejection=self._ejected)
        if self.hop is None:
            self.hop = UpstreamHop(self.dialer, self.health, self._attempted)

    def _ejected(self, key: CandidateKey) -> None:
        self.metrics.outlier_ejections.labels(key[0], key[1]).inc()

    def _attempted(self, upstream: Upstream, outcome: str, given_up: bool) -> None:
        key = candidate_key(upstream)
        self.metrics.upstream_attempts.labels(key[0], key[1], outcome).inc()
        if given_up:
            self.metrics.failovers.labels(key[0], key[1], outcome).inc()

    def _sink_failed(self, sink: Sink, error: BaseException) -> None:
        self.metrics.sink_errors.labels(sink.name).inc()

    def swap(self, snapshot: "Snapshot") -> None:
        self.snapshot = snapshot
        self.metrics.config_generation.set(snapshot.generation)

    def connection(self, client_id: str) -> ConnectionRecord:
        record = self.connections.get(client_id)
        if record is None:
            record = self.connections[client_id] = ConnectionRecord()
        return record

    def forget(self, client_id: str) -> None:
        self.connections.pop(client_id, None)

    @property
    def ready(self) -> bool:
        return self.snapshot is not None and self.listeners_bound and not self.stopping
