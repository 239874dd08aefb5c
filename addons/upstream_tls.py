"""Upstream TLS: every TLS connection the gateway opens to an origin is built here, never by mitmproxy's TlsConfig.

Why our own `tls_start_server`: mitmproxy has one global trust store (`ssl_verify_upstream_trusted_ca`, which
replaces the system bundle) and one global client-certificate option, while a BackendTLSPolicy is per Backend
(its own CAs, hostname/SNI, SPKI pins, CRLs, client certificate). `tls_established_server` is too late to abort
cleanly, so the checks run inside the handshake, in an OpenSSL verify callback: a failure fails the handshake,
and the client gets `502` with `x-egress-error: upstream-tls-invalid` and a detail naming the cause. Setting
`tls_start.ssl_conn` makes TlsConfig (which runs after us, in our master and in mitmweb) leave the connection
alone. `ssl_insecure` is never honoured: there is no way to a silent insecure connection.

Which parameters apply to a server connection (documented in docs/upstream-tls.md):
- `requestheaders` (after HttpRoutes chose the backend and set the request's host and port) binds the request
  to `(client connection id, host, port)` with the parameters of its backend's BackendTLSPolicy, else the
  gateway trust (the system store + additionalTrustBundleSecretRef). mitmproxy opens or reuses an upstream
  connection for exactly that (host, port) on that client connection, and the dial guard relabels an aliased
  connection back to that name, so `tls_start_server` finds the binding by `server.address`.
- A connection verified under other parameters than a new request wants (two rules of one route sending the
  same origin to Backends with different policies, or a reload that changed a policy) is retired from reuse
  (relabelled, so mitmproxy's reuse check no longer matches it) and a new connection is opened.
- When requests waiting for one new connection want different parameters, the connection is refused rather
  than verified under either.
- TLS without an HTTP request (a Terminate listener carrying other TCP) uses the connection record's backend.

Failures: the verify callback records the cause; `tls_failed_server` and post-handshake alerts (a TLS 1.3 origin
that requires a client certificate rejects the session only after our handshake completed) write it into the
FlowRecord of the waiting requests as a typed `GatewayFailure` (`FlowRecord.failure`), which the gateway-errors
addon answers.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

from mitmproxy import connection, ctx, http, tls
from mitmproxy.net import tls as net_tls
from mitmproxy.proxy import server_hooks

from egressproxy.engine.answers import error_response, flow_record
from egressproxy.engine.mitmproxy_boundary import default_ciphers, relabel_address
from egressproxy.engine.guard import fail_closed
from egressproxy.hostnames import InvalidHostname, canonical_host
from egressproxy.outcomes import GatewayFailure
from egressproxy.runtime.state import GatewayState
from egressproxy.engine.upstream_ssl import (
    TlsSettings,
    UpstreamConnection,
    Verification,
    build_context,
    make_connection,
    refusing_connection,
)
from egressproxy.upstream_tls import (
    POLICY_SOURCE_PREFIX,
    UpstreamTlsParams,
    client_certificate_required,
    describe_alert,
)

__all__ = ["UpstreamTls", "TlsSettings", "build_context", "make_connection", "Verification"]

log = logging.getLogger("egressproxy")

REASON = "upstream-tls-invalid"
_CONTEXT_CACHE_MAX = 256
_UNABLE_TO_GET_CRL = 3
_retired = itertools.count(1)



# ---------------------------------------------------------------------------------------------------------------
# Bookkeeping: which request wants which parameters for which upstream connection


Key = tuple[str, int]  # (canonical host, port) the request dials


@dataclass(eq=False)
class _Upstream:
    """One (host, port) on one client connection."""

    last: UpstreamTlsParams | None = None  # the latest request's parameters
    active: dict[str, tuple[http.HTTPFlow, UpstreamTlsParams]] = field(default_factory=dict)  # in-flight requests
    pending: set[str] = field(default_factory=set)  # of those, the ones that need a new connection
    live: dict[str, tuple[connection.Server, UpstreamTlsParams]] = field(default_factory=dict)  # server id ->


@dataclass(eq=False)
class _ServerInfo:
    client_id: str
    key: Key
    conn: UpstreamConnection
    flows: list[http.HTTPFlow]  # the requests that were waiting for this connection when it started TLS


class UpstreamTls:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.clients: dict[str, dict[Key, _Upstream]] = {}
        self.servers: dict[str, _ServerInfo] = {}
        self.flow_keys: dict[str, tuple[str, Key]] = {}  # flow id -> (client id, key)
        handshakes = state.metrics.upstream_tls_handshakes
        self._handshakes = {True: handshakes.labels("resumed"), False: handshakes.labels("full")}

    # --- parameters (the dialer holds them: one place for the hooks and the gateway's own clients) --------------

    def params_for(self, backend: str | None) -> UpstreamTlsParams:
        """The parameters for traffic to `backend` (FlowRecord naming: `ns/name` or `Kind/ns/name`)."""
        return self.state.dialer.tls_params(self.state.snapshot, backend)

    # --- requests ---------------------------------------------------------------------------------------------

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._bind(flow)

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        self._bind(flow)  # again, in case an addon after HttpRoutes chose another destination

    def _bind(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not flow.live:
            return
        params = self.params_for(flow_record(flow).backend)
        if flow.request.scheme == "http" and params.from_policy:
            # A BackendTLSPolicy means the gateway speaks TLS to that Backend (Gateway API), also for a request
            # that reached the gateway as plain HTTP.
            flow.request.scheme = "https"
        if flow.request.scheme != "https":
            return
        try:
            key = (canonical_host(flow.request.host), int(flow.request.port))
        except InvalidHostname:
            return  # the dial guard refuses it
        client_id = flow.client_conn.id
        previous = self.flow_keys.get(flow.id)
        if previous == (client_id, key):
            entry = self.clients[client_id][key].active.get(flow.id)
            if entry is not None and entry[1] == params:
                return
        self._unbind(flow)
        if params.problems:
            self.state.metrics.upstream_errors.labels(REASON).inc()
            detail = f"upstream TLS is invalid: {params.source} cannot be applied: {'; '.join(params.problems)}"
            flow.response = error_response(flow, REASON, detail)
            return
        upstream = self.clients.setdefault(client_id, {}).setdefault(key, _Upstream())
        for server_id, (server, live_params) in list(upstream.live.items()):
            if live_params != params:
                self._retire(upstream, server_id, server)
        upstream.last = params
        upstream.active[flow.id] = (flow, params)
        if not any(p == params for _, p in upstream.live.values()):
            upstream.pending.add(flow.id)
        self.flow_keys[flow.id] = (client_id, key)

    def _retire(self, upstream: _Upstream | None, server_id: str, server: connection.Server) -> None:
        """Keep a connection verified under other parameters (or failed) from being reused for new requests."""
        if upstream is not None:
            upstream.live.pop(server_id, None)
        if server.address is not None:
            relabel_address(server, (f"retired-{next(_retired)}.upstream-tls.invalid", int(server.address[1])))

    def _unbind(self, flow: http.HTTPFlow) -> None:
        where = self.flow_keys.pop(flow.id, None)
        if where is None:
            return
        upstream = self.clients.get(where[0], {}).get(where[1])
        if upstream is not None:
            upstream.active.pop(flow.id, None)
            upstream.pending.discard(flow.id)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._unbind(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._unbind(flow)

    # --- connections ------------------------------------------------------------------------------------------

    def tls_start_server(self, tls_start: tls.TlsData) -> None:
        if tls_start.ssl_conn is not None:
            return
        server = tls_start.conn
        if not isinstance(server, connection.Server) or server is not tls_start.context.server:
            return  # TLS to an HTTPS upstream proxy hop: TlsConfig's gateway-wide trust applies
        settings = self._settings(tls_start)
        try:
            self._start(tls_start, server, settings)
        except Exception as e:
            # Hooks fail open, and TlsConfig would then build a connection without the policy: refuse instead.
            log.exception("upstream TLS setup failed for %s; refusing the connection", server.address)
            self.state.metrics.hook_errors.labels(type(self).__name__, "tls_start_server").inc()
            name = str(server.sni or (server.address[0] if server.address else "?"))
            cause = f"the gateway could not set up upstream TLS: {e!r}"
            tls_start.ssl_conn = refusing_connection(settings, cause, name, "?")

    def _start(self, tls_start: tls.TlsData, server: connection.Server, settings: TlsSettings) -> None:
        client = tls_start.context.client
        assert server.address is not None
        key, upstream = self._upstream_of(client.id, server)
        flows: list[http.HTTPFlow] = []
        conflict: str | None = None
        if upstream is not None:
            waiting = [upstream.active[i] for i in sorted(upstream.pending) if i in upstream.active]
            upstream.pending.clear()
            flows = [f for f, _ in waiting]
            wanted = list(dict.fromkeys(p for _, p in waiting))
            if len(wanted) > 1:
                conflict = (
                    f"requests on one client connection want {key[0]}:{key[1]} verified under different policies "
                    f"({', '.join(p.source for p in wanted)}); retry them separately"
                )
            params = wanted[0] if wanted else (upstream.last or self.params_for(None))
        else:
            record = self.state.connections.get(client.id)
            params = self.params_for(getattr(record, "backend", None))

        name = params.hostname or server.sni or client.sni or str(server.address[0])
        server.sni = name
        self._offer_alpn(client, server)
        if conflict is not None:
            conn = refusing_connection(settings, conflict, name, params.source)
        else:
            conn = self.state.dialer.tls_connection(params, name, settings, list(server.alpn_offers) or None, key)
        info = _ServerInfo(client.id, key, conn, flows)
        conn.egress.on_failure = lambda cause, info=info: self._mark(
            info.flows, info.client_id, info.key, cause, info.conn.egress.params.source
        )
        conn.egress.on_data = lambda info=info: self._unmark_tentative(info)
        tls_start.ssl_conn = conn
        self.servers[server.id] = info
        if upstream is not None:
            upstream.live[server.id] = (server, params)

    def _upstream_of(self, client_id: str, server: connection.Server) -> tuple[Key, _Upstream | None]:
        assert server.address is not None
        port = int(server.address[1])
        table = self.clients.get(client_id, {})
        for host in (server.address[0], server.sni):
            if not host:
                continue
            try:
                key = (canonical_host(str(host)), port)
            except InvalidHostname:
                continue
            if key in table:
                return key, table[key]
        return (str(server.address[0]), port), None

    @staticmethod
    def _settings(tls_start: tls.TlsData) -> TlsSettings:
        server = tls_start.conn
        opts = ctx.options
        if not server.cipher_list and opts.ciphers_server:
            server.cipher_list = opts.ciphers_server.split(":")
        min_version = net_tls.Version[opts.tls_version_server_min]
        return TlsSettings(
            method=net_tls.Method.DTLS_CLIENT_METHOD if tls_start.is_dtls else net_tls.Method.TLS_CLIENT_METHOD,
            min_version=min_version,
            max_version=net_tls.Version[opts.tls_version_server_max],
            cipher_list=tuple(server.cipher_list or default_ciphers(min_version)),
            ecdh_curve=net_tls.get_curve(opts.tls_ecdh_curve_server),
        )

    @staticmethod
    def _offer_alpn(client: connection.Client, server: connection.Server) -> None:
        """As TlsConfig does: mirror the client's ALPN offers (without h2 when http2 is off)."""
        if server.alpn_offers:
            return
        if client.alpn_offers:
            if ctx.options.http2:
                server.alpn_offers = tuple(client.alpn_offers)
            else:
                server.alpn_offers = tuple(x for x in client.alpn_offers if x != b"h2")
        else:
            server.alpn_offers = []

    def tls_failed_server(self, tls_start: tls.TlsData) -> None:
        info = self.servers.get(tls_start.conn.id)
        if info is None:
            return
        cause = info.conn.egress.failure
        if cause is None:
            error = tls_start.conn.error or "handshake failed"
            if "alert" in error:
                cause = describe_alert(
                    error,
                    sent_client_certificate=info.conn.egress.params.has_client_certificate,
                    certificate_requested=info.conn.egress.certificate_requested,
                    name=info.conn.egress.name,
                    source=info.conn.egress.params.source,
                )
            else:
                cause = f"{error}: {info.conn.egress.name}, checked against {info.conn.egress.params.source}"
        log.warning("upstream TLS to %s failed: %s", info.conn.egress.name, cause)
        self._mark(info.flows, info.client_id, info.key, cause, info.conn.egress.params.source)
        # mitmproxy keeps a failed connection and answers later requests for the same (host, port) on this
        # client connection with its error, without dialling: those may want other parameters (another rule's
        # Backend), and a fixed origin deserves a new handshake. Retire it, so each request dials afresh.
        upstream = self.clients.get(info.client_id, {}).get(info.key)
        server = tls_start.conn
        assert isinstance(server, connection.Server)
        self._retire(upstream, server.id, server)

    def tls_established_server(self, tls_start: tls.TlsData) -> None:
        """A TLS 1.3 origin that requires a client certificate we did not send completes the handshake and
        rejects us only afterwards, often as a bare TCP reset: until it sends a first byte, that is the cause."""
        self._count_handshake(tls_start.ssl_conn)
        info = self.servers.get(tls_start.conn.id)
        if info is None:
            return
        verification = info.conn.egress
        if verification.certificate_requested and not verification.params.has_client_certificate:
            verification.tentative = client_certificate_required(verification.name)
            self._mark(info.flows, info.client_id, info.key, verification.tentative, verification.params.source)

    def _count_handshake(self, conn: object) -> None:
        if isinstance(conn, UpstreamConnection):
            resumed = conn.resumed()
            self.state.dialer.sessions.note_handshake(resumed)
            self._handshakes[resumed].inc()

    def _unmark_tentative(self, info: _ServerInfo) -> None:
        cause, info.conn.egress.tentative = info.conn.egress.tentative, None
        if cause is None:
            return
        upstream = self.clients.get(info.client_id, {}).get(info.key)
        flows = list(info.flows) + ([f for f, _ in upstream.active.values()] if upstream is not None else [])
        for flow in flows:
            record = flow_record(flow)
            if record.failure is not None and record.failure.detail == cause:
                record.failure = None

    def _mark(self, flows: list[http.HTTPFlow], client_id: str, key: Key, cause: str, source: str) -> None:
        """Leave the typed failure on the requests that wait for (or use) the failed connection."""
        targets = {f.id: f for f in flows}
        upstream = self.clients.get(client_id, {}).get(key)
        if upstream is not None:
            targets.update({i: f for i, (f, _) in upstream.active.items() if i not in upstream.pending})
        failure = GatewayFailure(REASON, cause, source if source.startswith(POLICY_SOURCE_PREFIX) else "")
        for flow in targets.values():
            if flow.response is None:
                flow_record(flow).failure = failure

    def server_disconnected(self, data: server_hooks.ServerConnectionHookData) -> None:
        info = self.servers.pop(data.server.id, None)
        if info is None:
            return
        info.conn.mark_closed()  # its session stays resumable for the next connection (engine/tls_sessions.py)
        upstream = self.clients.get(info.client_id, {}).get(info.key)
        if upstream is not None:
            upstream.live.pop(data.server.id, None)

    def client_disconnected(self, client: connection.Client) -> None:
        for upstream in self.clients.pop(client.id, {}).values():
            for server_id in upstream.live:
                info = self.servers.pop(server_id, None)
                if info is not None:  # nothing more is sent upstream for this client; server_disconnected comes
                    info.conn.mark_closed()  # after this and would no longer find it
            for flow_id in upstream.active:
                self.flow_keys.pop(flow_id, None)
