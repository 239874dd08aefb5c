"""The one dialer (DESIGN.md section 6, seam 2): every upstream connection the gateway opens passes through here.

Two checks decide whether and how the gateway may talk to an upstream, and both live in this one component so
no connection can skip either:

- the destination check (egressproxy/engine/destinations.py): hostAliases, DNS with the Backend's DNSPolicy,
  the SSRF guard, reverse DNS, and the one checked address that is then dialled (pinned: no second lookup);
- the upstream TLS context (egressproxy/engine/upstream_ssl.py): the trust (the system store as OpenSSL finds
  it + the gateway's bundle, or a BackendTLSPolicy's CAs), hostname/SANs, the client certificate (mTLS), SPKI pins and CRLs,
  checked inside the handshake by an OpenSSL verify callback.

Two kinds of callers use it. mitmproxy's hooks: `server_connect` (addons/dial_guard.py) asks `destination()`,
`tls_start_server` (addons/upstream_tls.py) asks `tls_params()` and `tls_connection()`. Connections the gateway
opens on its own (a failover replay, an ext_authz call, a token fetch) use `egressproxy/dialer_http.py`, an
httpcore network backend over the same three calls, as an httpx client.

Settings are read through one function each (`dns_settings`, `tls_params`) from the snapshot's compiled policies
(`Snapshot.compiled`, seam 3): nothing is parsed on the hot path.
"""

from __future__ import annotations

import logging
from typing import Any

from OpenSSL import SSL

from egressproxy.engine.destinations import Destination, DestinationCheck
from egressproxy.engine.tls_sessions import TlsSessions
from egressproxy.engine.upstream_ssl import (
    TlsSettings,
    UpstreamConnection,
    Verification,
    build_context,
    make_connection,
    refusing_connection,
)
from egressproxy.flowrecord import ConnectionRecord
from egressproxy.metrics import GatewayMetrics
from egressproxy.resolver import DnsSettings, Resolver
from egressproxy.snapshot import Snapshot
from egressproxy.system_trust import system_store
from egressproxy.upstream_tls import (
    UpstreamTlsParams,
    gateway_params,
)

__all__ = ["Dialer", "TlsSettings"]

log = logging.getLogger("egressproxy")

_CONTEXT_CACHE_MAX = 256


class Dialer:
    """Destination check and upstream TLS, shared by the hooks and the gateway's own clients."""

    def __init__(self, resolver: Resolver, metrics: GatewayMetrics) -> None:
        self.resolver = resolver
        self.metrics = metrics
        self.destinations = DestinationCheck(resolver, metrics)
        self._no_snapshot_params = gateway_params(None, None, system_store().describe())
        self._contexts: dict[tuple[UpstreamTlsParams, TlsSettings], SSL.Context] = {}
        self.sessions = TlsSessions()

    # --- where to connect ----------------------------------------------------------------------------------------

    async def destination(self, snapshot: Snapshot, record: ConnectionRecord, host: str, port: int) -> Destination:
        """The one address (host, port) may be dialled at for this connection, or the typed refusal.

        `record.upstreams` names the candidates a decision allowed (their trust and Backend); an address the
        CONNECT gate already checked is in `record.pinned_addresses`.
        """
        return await self.destinations.check(snapshot, record, host, port)

    def dns_settings(self, snapshot: Snapshot, backend: Any) -> DnsSettings:
        """The effective DNSPolicy for a Backend ref (None: the gateway's)."""
        return self.destinations.settings(snapshot, backend)

    # --- how to speak TLS ------------------------------------------------------------------------------------------

    def tls_params(self, snapshot: Snapshot | None, backend: str | None) -> UpstreamTlsParams:
        """The verification parameters for traffic to `backend` (`ns/name` or `Kind/ns/name`; None: the gateway
        trust), compiled with the snapshot (seam 3): the attached BackendTLSPolicy's, else the gateway trust."""
        if snapshot is None:
            return self._no_snapshot_params
        return snapshot.compiled.tls_for_name(backend).params

    def tls_context(self, params: UpstreamTlsParams, settings: TlsSettings) -> SSL.Context:
        """An OpenSSL client context for `params` (built once, shared by every connection under them)."""
        key = (params, settings)
        context = self._contexts.get(key)
        if context is None:
            if len(self._contexts) >= _CONTEXT_CACHE_MAX:
                self._contexts.clear()
            context = self._contexts[key] = build_context(params, settings)
        return context

    def tls_connection(
        self,
        params: UpstreamTlsParams,
        name: str,
        settings: TlsSettings,
        alpn: list[bytes] | None = None,
        origin: tuple[str, int] | None = None,
    ) -> UpstreamConnection:
        """A client connection verifying `name` under `params` (a policy that cannot be honoured refuses every
        handshake: never a weaker check). Its `egress` Verification holds the cause once a check failed.

        With `origin` (the dialled host and port), the connection offers the session an earlier connection under
        the very same key left (engine/tls_sessions.py) and leaves its own for the next one."""
        if params.problems:
            cause = f"{params.source} cannot be applied: {'; '.join(params.problems)}"
            return refusing_connection(settings, cause, name, params.source)
        conn = make_connection(self.tls_context(params, settings), Verification(params, name), alpn)
        if origin is not None:
            key = (origin, name, params, settings, tuple(alpn or ()))
            session = self.sessions.get(key)
            if session is not None:
                conn.set_session(session)
            conn.on_session = lambda session: self.sessions.put(key, session)
        return conn
