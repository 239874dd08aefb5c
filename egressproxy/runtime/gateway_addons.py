"""The gateway's addons, in the order they must run, shared by `egressproxy run` and mitmweb's `addons/egress.py`."""

from __future__ import annotations

import asyncio

from addons.abandoned_clients import AbandonedClients
from addons.ai_guardrails import AiGuardrails
from addons.body_taps import BodyTaps
from addons.cert_mint import CertMinting
from addons.client_limits import ClientLimitGuard
from addons.connect_gate import ConnectGate
from addons.connection_records import ConnectionRecords
from addons.connection_table import ConnectionTable
from addons.credential_injection import CredentialInjection
from addons.dial_guard import DialGuard
from addons.dns_answers import DnsAnswers
from addons.ext_auth import ExtAuth
from addons.failover import Failover
from addons.flow_metrics import FlowMetrics
from addons.gateway_errors import GatewayErrors
from addons.http_routes import HttpRoutes
from addons.l4_relay import L4Relay
from addons.model_rewrite import ModelRewrite
from addons.listener_match import ListenerMatch
from addons.parent_proxy import ParentProxyAuth
from addons.rate_limits import RateLimits
from addons.token_metrics import TokenMetrics
from addons.tracing import RequestTracing
from addons.readiness import Readiness
from addons.request_policies import RequestPolicies
from addons.request_timeout import RequestTimeout
from addons.upstream_tls import UpstreamTls
from addons.upstream_trust import UpstreamTrust
from egressproxy.access_log import AccessLog
from egressproxy.runtime.idle_steps import IdleSteps
from egressproxy.runtime.reloader import Reloader
from egressproxy.runtime.state import GatewayState
from egressproxy.tracing import Tracing

__all__ = ["GatewayAddons"]


class GatewayAddons:
    def __init__(self, state: GatewayState, reloader: Reloader) -> None:
        self.state = state
        self.cert_minting = CertMinting(state)
        self.upstream_trust = UpstreamTrust(state)
        self.readiness = Readiness(state)
        self.gateway_errors = GatewayErrors(state)
        self.client_limits = ClientLimitGuard(state)
        self.access_log = AccessLog(lambda: state.snapshot, state.metrics)
        state.sinks.register(self.access_log)
        self.tracing = Tracing(on_dropped=lambda n: state.metrics.trace_span_drops.labels("export-failed").inc(n))
        state.sinks.register(self.tracing)
        self.addons: list[object] = [
            AbandonedClients(state),  # first: a connection its client gave up on costs nothing more (issue 16)
            self.client_limits,  # then a connection over the per-address cap is refused before anything else
            ConnectionRecords(state),  # first: meters from the root layer, finishes before the table forgets
            ConnectionTable(state),
            ConnectGate(state),
            ListenerMatch(state),
            HttpRoutes(state),
            RequestPolicies(state),  # after HttpRoutes routed the request; before RateLimits spends a budget
            ExtAuth(state),  # after the local policies; before RateLimits and before credentials are injected
            RateLimits(state),  # after HttpRoutes found the policies; before BodyTaps builds the tap chain
            AiGuardrails(state),  # after HttpRoutes (FlowRecord.ai, streaming on); before BodyTaps copies bodies
            TokenMetrics(state),  # before BodyTaps (its tap joins the chain) and ModelRewrite (the client's model)
            BodyTaps(state),  # after HttpRoutes turned streaming on; before FlowMetrics finishes the record
            Failover(state),  # after BodyTaps (the body is buffered); before ModelRewrite and credentials (per candidate)
            ModelRewrite(state),  # after BodyTaps (the capture keeps the client's body), before credentials
            CredentialInjection(state),  # after BodyTaps: SigV4 signs the body as it is sent
            RequestTimeout(state),
            DialGuard(state),
            UpstreamTls(state),
            ParentProxyAuth(state),
            self.cert_minting,
            self.gateway_errors,
            L4Relay(state),
            DnsAnswers(state),
            FlowMetrics(state),
            RequestTracing(state, self.tracing),  # after FlowMetrics took the client's headers
            self.readiness,
            self.upstream_trust,
        ]
        state.cache_stats = self.cache_stats
        state.idle_steps = IdleSteps(self.addons)  # which of them a snapshot leaves nothing to do (idle_steps.py)
        reloader.on_swap.append(self.after_swap)

    def cache_stats(self) -> dict[str, object]:
        """The hot-path caches' figures (GET /stats)."""
        return {"cert_cache": self.cert_minting.stats(), "upstream_tls_sessions": self.state.dialer.sessions.stats()}

    def prepare_blocking(self) -> str | None:
        """File work for the current snapshot: minted-cert preloads and the upstream trust bundle."""
        self.cert_minting.prepare()
        return self.upstream_trust.bundle_path()

    def stop_sinks(self) -> None:
        """At shutdown (blocking: call off the loop): write out what the access-log threads still hold."""
        self.access_log.stop()
        self.tracing.shutdown()

    async def after_swap(self) -> None:
        self.access_log.reopen()  # every accepted reload (SIGHUP included) reopens the access-log files
        path = await asyncio.to_thread(self.prepare_blocking)
        self.upstream_trust.apply(path)
        snapshot = self.state.snapshot
        if snapshot is not None:  # Redis clients of stores the new configuration no longer names are closed
            await self.state.rate_limiter.retain(snapshot.compiled.rate_limits.redis_stores())
