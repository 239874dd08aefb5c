"""Prometheus metrics (names and labels of DESIGN.md 4.1 and 4.2 are a contract), on a registry of our own.

Request and connection metrics come from finished records through `MetricsSink` (seam 5), so they count the
same requests and connections every other sink sees; counters that describe the gateway's own machinery
(reloads, DNS, hook errors) are written where it happens.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from egressproxy.flowrecord import FinishedConnection, FinishedRequest, Identity
from egressproxy.sinks import Sink

__all__ = ["GatewayMetrics", "MetricsSink", "BoundedValues", "status_class", "TOKEN_BUCKETS"]

REQUEST_LABELS = ("gateway", "listener", "route", "backend", "namespace", "serviceaccount", "decision", "status_class")
CONNECTION_LABELS = ("gateway", "listener", "route")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# gen_ai.client.token.usage's advised bucket boundaries (OpenTelemetry GenAI semantic conventions)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
TOKEN_LABELS = ("gen_ai_token_type", "gen_ai_provider_name", "gen_ai_request_model")

# Label values a client chooses (an unverified Proxy-Authorization user, the model it names) are bounded: past
# these many distinct values (per process), new ones are counted as `other`, so no client can grow the series
# without limit. Gateway, listener, route and backend come from the configuration and are bounded by it.
MAX_IDENTITIES = 1000
MAX_MODELS = 200
MAX_LABEL_LENGTH = 128
OVERFLOW = "other"


class BoundedValues:
    """At most `limit` distinct values pass; later new ones become `other`. Values are cut to 128 characters."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[object] = set()

    def bound(self, value: str) -> str:
        value = value[:MAX_LABEL_LENGTH]
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return OVERFLOW
        self.seen.add(value)
        return value

    def bound_identity(self, identity: Identity) -> tuple[str, str]:
        """Both identity labels together: a new (namespace, serviceaccount) pair past the limit is (other, other)."""
        pair = (identity.namespace[:MAX_LABEL_LENGTH], identity.service_account[:MAX_LABEL_LENGTH])
        if pair in self.seen:
            return pair
        if len(self.seen) >= self.limit:
            return OVERFLOW, OVERFLOW
        self.seen.add(pair)
        return pair


def status_class(status: int | None) -> str:
    """`2xx`, `4xx`, ... or `none` when no response was sent."""
    if not status:
        return "none"
    return f"{status // 100}xx"


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("egress_requests", "HTTP requests through the gateway", REQUEST_LABELS, registry=r)
        self.request_duration = Histogram(
            "egress_request_duration_seconds",
            "Time from request to the end of the response",
            REQUEST_LABELS,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.connections = Counter(
            "egress_connections",
            "Client connections (and CONNECT tunnels) classified by the gateway",
            ("gateway", "listener", "route", "carries", "decision"),
            registry=r,
        )
        self.denials = Counter("egress_denials", "Denied connections and requests", ("reason",), registry=r)
        # Clients refused for what they send, not for where they go (docs/reliability.md), by reason: the client
        # limits (head size, header count, timeouts, per-address cap) and HTTP/2 abuse (rapid reset, floods).
        self.client_refusals = Counter(
            "egress_client_refusals",
            "Client connections refused or closed and streams refused: client limits and HTTP/2 abuse, by reason",
            ("reason",),
            registry=r,
        )
        self.upstream_errors = Counter(
            "egress_upstream_errors", "Requests failed by the gateway on the way upstream", ("reason",), registry=r
        )
        self.hook_errors = Counter(
            "egress_hook_errors", "Unexpected errors inside addon hooks (the flow was denied)", ("addon", "hook"), registry=r
        )
        self.config_reloads = Counter(
            "egress_config_reloads", "Configuration reload attempts", ("result",), registry=r
        )
        self.config_generation = Gauge(
            "egress_config_generation", "Generation of the serving snapshot", registry=r, multiprocess_mode="livemax"
        )
        self.config_last_reload_success = Gauge(
            "egress_config_last_reload_successful",
            "1 if the last reload attempt succeeded (in every worker)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.worker_requests = Counter(
            "egress_worker_requests", "HTTP requests by worker process (--workers)", ("worker",), registry=r
        )
        self.dns_lookups = Counter(
            "egress_dns_lookups",
            "DNS queries sent by the gateway's resolver (cache misses), by result: ok, nodata, nxdomain, timeout, error",
            ("result",),
            registry=r,
        )
        self.dns_cache_hits = Counter("egress_dns_cache_hits", "Lookups answered from the resolver's TTL cache", registry=r)
        self.ssrf_denials = Counter(
            "egress_ssrf_denials",
            "Dials refused by the SSRF guard, by the range of the refused address (loopback, private, denyCIDRs, ...)",
            ("range",),
            registry=r,
        )
        self.connection_bytes = Counter(
            "egress_connection_bytes",
            "Bytes received on finished connections: direction upstream from the client, downstream from upstream",
            (*CONNECTION_LABELS, "direction"),
            registry=r,
        )
        self.connection_duration = Histogram(
            "egress_connection_duration_seconds",
            "Lifetime of finished client connections (and transparent UDP sessions)",
            CONNECTION_LABELS,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.sink_errors = Counter(
            "egress_sink_errors", "Finished records a sink failed on (traffic and other sinks unaffected)", ("sink",), registry=r
        )
        self.tap_errors = Counter(
            "egress_tap_errors", "Body taps that failed (the chunk passed on unchanged)", ("tap",), registry=r
        )

        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens a GenAI provider reported per request (input and output), by provider and requested model",
            TOKEN_LABELS,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.access_log_drops = Counter(
            "egress_access_log_drops",
            "Access log lines not written (queue full, file or collector failing); traffic is never slowed",
            ("sink",),
            registry=r,
        )
        self.trace_span_drops = Counter(
            "egress_trace_span_drops",
            "Spans not exported (the collector failed or did not answer in time); traffic is never slowed",
            ("reason",),
            registry=r,
        )

        self.policy_reports = Counter(
            "egress_policy_reports",
            "Denials a Report-mode policy would have made (the request passed)",
            ("reason", "policy"),
            registry=r,
        )
        self.rate_limit_store_errors = Counter(
            "egress_rate_limit_store_errors",
            "Rate-limit decisions taken without the policy's store (Redis unreachable), by the failureMode that decided",
            ("policy", "failure_mode"),
            registry=r,
        )

        self.upstream_tls_failures = Counter(
            "egress_upstream_tls_failures", "Upstream TLS failures by cause", ("cause",), registry=self.registry
        )
        self.dns_answers = Counter(
            "egress_dns_answers", "Queries answered by the DNS listener", ("result",), registry=self.registry
        )
        # Failover (docs/failover.md): every attempt or skip of a candidate by the failover hop, by outcome.
        self.upstream_attempts = Counter(
            "egress_upstream_attempts",
            "Failover walk: attempts and skips of upstream candidates, by outcome",
            ("backend", "provider", "outcome"),
            registry=self.registry,
        )
        self.failovers = Counter(
            "egress_failovers",
            "Failover walk: a candidate given up for the next one, by the reason",
            ("backend", "provider", "reason"),
            registry=self.registry,
        )
        self.outlier_ejections = Counter(
            "egress_outlier_ejections",
            "Candidates ejected by outlier detection (consecutive failures)",
            ("backend", "provider"),
            registry=self.registry,
        )
        self._hot_path_caches(r)

    def _hot_path_caches(self, r: CollectorRegistry) -> None:
        """The caches that spare handshake work (docs/hot-path-caches.md)."""
        self.cert_cache = Counter(
            "egress_cert_cache",
            "Interception certificates taken from the minted-leaf cache (hit) or minted (minted)",
            ("result",),
            registry=r,
        )
        self.cert_cache_evictions = Counter(
            "egress_cert_cache_evictions", "Minted leaves dropped by the cache's bound (--cert-cache-size)", registry=r
        )
        self.cert_cache_entries = Gauge(
            "egress_cert_cache_entries", "Minted leaves held in memory", registry=r, multiprocess_mode="livesum"
        )
        self.upstream_tls_handshakes = Counter(
            "egress_upstream_tls_handshakes",
            "Completed TLS handshakes with upstreams, by session: resumed (a cached session) or full",
            ("session",),
            registry=r,
        )

    def render(self) -> bytes:
        """The registry's text; with `--workers` (PROMETHEUS_MULTIPROC_DIR set) the sum over every worker."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            aggregate = CollectorRegistry()
            multiprocess.MultiProcessCollector(aggregate)
            return generate_latest(aggregate)
        return generate_latest(self.registry)


class MetricsSink(Sink):
    """Request and connection metrics from finished records."""

    name = "metrics"

    def __init__(self, metrics: GatewayMetrics, worker: int = 0) -> None:
        self.metrics = metrics
        self.worker = str(worker)
        self.identities = BoundedValues(MAX_IDENTITIES)
        self.models = BoundedValues(MAX_MODELS)
        self.worker_requests: Any = None  # this worker's child, made at its first request (no 0 sample before)
        # label values -> (requests, duration) children: `.labels()` validates and looks its values up on every
        # call; this dict holds no more entries than the registry already keeps children for (bounded labels).
        self.request_children: dict[tuple[str, ...], tuple[Any, Any]] = {}

    def request_finished(self, record: FinishedRequest) -> None:
        labels = (
            record.gateway or "none",
            record.listener or "none",
            record.route or "none",
            record.backend or "none",
            *self.identities.bound_identity(record.identity),
            record.decision,
            status_class(record.status),
        )
        children = self.request_children.get(labels)
        if children is None:
            children = (self.metrics.requests.labels(*labels), self.metrics.request_duration.labels(*labels))
            self.request_children[labels] = children
        children[0].inc()
        children[1].observe(record.duration)
        if self.worker_requests is None:
            self.worker_requests = self.metrics.worker_requests.labels(self.worker)
        self.worker_requests.inc()
        call = record.gen_ai
        if call is not None and call.reported:
            model = self.models.bound(call.request_model)
            self.metrics.token_usage.labels("input", call.provider, model).observe(call.input_tokens)
            self.metrics.token_usage.labels("output", call.provider, model).observe(call.output_tokens)

    def connection_finished(self, record: FinishedConnection) -> None:
        labels = (record.gateway or "none", record.listener or "none", record.route or "none")
        self.metrics.connection_bytes.labels(*labels, "upstream").inc(record.bytes_upstream)
        self.metrics.connection_bytes.labels(*labels, "downstream").inc(record.bytes_downstream)
        self.metrics.connection_duration.labels(*labels).observe(record.duration)
