"""Which listener takes a connection, by what it carries and its destination port (DESIGN.md section 4).

Plain bytes are classified in `next_layer` (HTTP or other TCP); TLS is decided in `tls_clienthello`, once the
whole ClientHello and its SNI are known. The outcome is written into the connection's record: passthrough
(`ignore_connection`), interception, per-request HTTP routing, a raw relay, or a denial that closes the
connection without dialling anything.
"""

from __future__ import annotations

import logging

from mitmproxy import connection, tls
from mitmproxy.proxy import layer, layers
from mitmproxy.proxy.layers.http import HTTPMode
from mitmproxy.proxy.layers.tls import starts_like_tls_record
from mitmproxy.proxy.mode_specs import RegularMode, TransparentMode

from egressproxy.decisions import Action, ConnectionDecision, decide_connection, route_name
from egressproxy.engine.guard import fail_closed
from egressproxy.engine.layers import CloseLayer
from egressproxy.flowrecord import ConnectionRecord
from egressproxy.hostnames import InvalidHostname, canonical_host
from egressproxy.matching import Carries
from egressproxy.runtime.state import GatewayState

log = logging.getLogger("egressproxy")

_HTTP_METHODS = (b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT", b"PRI")


def looks_like_http(data: bytes) -> bool:
    """An HTTP/1 request line or the HTTP/2 preface (what mitmproxy's own heuristic accepts)."""
    first_line = data.split(b"\n", 1)[0]
    method = first_line.split(b" ", 1)[0]
    return method in _HTTP_METHODS and b" " in first_line


class ListenerMatch:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def _destination(self, client: connection.Client, server: connection.Server, record: ConnectionRecord) -> tuple[str | None, int | None]:
        """(original destination IP, port) in transparent mode; (None, CONNECT port) after a CONNECT."""
        if server.address is None:
            return None, None
        host, port = str(server.address[0]), int(server.address[1])
        if isinstance(client.proxy_mode, TransparentMode):
            try:
                return canonical_host(host), port
            except InvalidHostname:
                return None, port
        return None, port

    def _takes_part(self, client: connection.Client, record: ConnectionRecord) -> bool:
        if record.decided:
            return False
        if isinstance(client.proxy_mode, RegularMode):
            return record.connect_host is not None  # only the tunnel after a CONNECT
        return isinstance(client.proxy_mode, TransparentMode)

    @fail_closed
    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        context = nextlayer.context
        client = context.client
        record = self.state.connection(client.id)
        if nextlayer.layer is not None or not self._takes_part(client, record):
            return
        data = nextlayer.data_client()
        if client.transport_protocol == "tcp" and starts_like_tls_record(data):
            return  # mitmproxy sets up the TLS layers; tls_clienthello decides with the full ClientHello
        carries = Carries.UDP if client.transport_protocol == "udp" else (Carries.HTTP if looks_like_http(data) else Carries.TCP)
        ip, port = self._destination(client, context.server, record)
        decision = self._decide(record, carries, port, ip=ip)
        if decision.action is Action.CLOSE:
            nextlayer.layer = CloseLayer(context)
        elif decision.action is Action.HTTP:
            self._dial_by_name(context.server, decision, port)
            nextlayer.layer = layers.HttpLayer(context, HTTPMode.transparent)
        elif decision.action is Action.UDP:
            self._allow_dial(record, context.server)
            nextlayer.layer = layers.UDPLayer(context)
        else:
            self._allow_dial(record, context.server)
            nextlayer.layer = layers.TCPLayer(context)

    @fail_closed
    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        context = data.context
        client = context.client
        record = self.state.connection(client.id)
        if not self._takes_part(client, record):
            return
        ip, port = self._destination(client, context.server, record)
        decision = self._decide(record, Carries.TLS, port, ip=ip, sni=data.client_hello.sni)
        if decision.action is Action.CLOSE:
            data.ignore_connection = True  # no handshake with our certificate; the dial guard refuses the dial
            return
        self._dial_by_name(context.server, decision, port)
        if decision.action is Action.PASSTHROUGH:
            self._allow_dial(record, context.server)
            data.ignore_connection = True
        elif decision.action is Action.INTERCEPT:
            record.intercept = True
        else:  # a TCP listener took the TLS bytes: relay them untouched
            self._allow_dial(record, context.server)
            data.ignore_connection = True

    def _decide(
        self, record: ConnectionRecord, carries: Carries, port: int | None, *, ip: str | None, sni: str | None = None
    ) -> ConnectionDecision:
        snapshot = self.state.snapshot
        record.decided = True
        record.carries = carries.value if hasattr(carries, "value") else str(carries)
        record.ip = ip
        record.port = port
        if snapshot is None or port is None:
            from egressproxy.flowrecord import Verdict

            decision = ConnectionDecision(Action.CLOSE, Verdict.deny("no-route", message="no destination"))
        else:
            decision = decide_connection(snapshot, carries, port, connect_host=record.connect_host, sni=sni, ip=ip)
            record.generation = snapshot.generation
        try:
            record.sni = canonical_host(sni) if sni else None
        except InvalidHostname:
            record.sni = None
        record.host = decision.host
        record.listener = decision.listener.name if decision.listener else None
        record.route = route_name(decision.route)
        record.verdict = decision.verdict
        self._count(record, decision)
        return decision

    def _count(self, record: ConnectionRecord, decision: ConnectionDecision) -> None:
        snapshot = self.state.snapshot
        gateway = f"{snapshot.gateway.ref.namespace}/{snapshot.gateway.ref.name}" if snapshot else "none"
        verdict = "allow" if decision.verdict.allowed else "deny"
        self.state.metrics.connections.labels(
            gateway, record.listener or "none", record.route or "none", record.carries or "none", verdict
        ).inc()
        if not decision.verdict.allowed:
            self.state.metrics.denials.labels(decision.verdict.reason).inc()
            log.debug("connection denied: %s %s", decision.verdict.reason, decision.host)

    @staticmethod
    def _dial_by_name(server: connection.Server, decision: ConnectionDecision, port: int | None) -> None:
        """Transparent connections dial the name that was decided on (SNI), not the address the client chose."""
        if decision.host and port is not None and server.address is not None and not server.connected:
            server.address = (decision.host, port)

    @staticmethod
    def _allow_dial(record: ConnectionRecord, server: connection.Server) -> None:
        if server.address is not None:
            try:
                record.allowed_upstreams.add((canonical_host(str(server.address[0])), int(server.address[1])))
            except InvalidHostname:
                pass
