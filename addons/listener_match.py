"""Which listener takes a connection, by what it carries and its destination port (DESIGN.md section 4).

Everything is decided in `next_layer`, before any layer that could dial exists: plain bytes are classified
as HTTP or other TCP, and TLS waits (AddonHalt keeps mitmproxy's own NextLayer from deciding early) until the
whole ClientHello and its SNI are in. The outcome is written into the connection's record and expressed as the
layer stack: passthrough (raw relay, optionally through a parent proxy), interception (server and client TLS
layers, then HTTP routing per request), per-request HTTP routing, a raw relay, or a layer that closes the
connection without dialling anything. `tls_clienthello` only decides what next_layer could not (a host tool
that set the TLS layers before us).
"""

from __future__ import annotations

import logging

from mitmproxy import connection, exceptions, tls
from mitmproxy.proxy import layer, layers, tunnel
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http import HTTPMode
from mitmproxy.proxy.layers.tls import parse_client_hello, starts_like_tls_record
from mitmproxy.proxy.mode_specs import RegularMode, TransparentMode

from egressproxy.decisions import Action, ConnectionDecision, decide_connection, parent_for, route_name
from egressproxy.engine.direct_relay import DirectRelayLayer
from egressproxy.engine.guard import fail_closed
from egressproxy.engine.layers import CloseLayer
from egressproxy.engine.mitmproxy_boundary import HttpUpstreamProxy
from egressproxy.flowrecord import ConnectionRecord
from egressproxy.hostnames import InvalidHostname, canonical_host
from egressproxy.matching import Carries
from egressproxy.runtime.state import GatewayState
from egressproxy.upstreams import Upstream

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
        if nextlayer.layer is not None:
            return
        if isinstance(client.proxy_mode, RegularMode) and record.connect_host is None and not record.decided:
            # The explicit proxy speaks plain HTTP to its clients: TLS to the proxy port itself would be served
            # with mitmproxy's own CA (a "secure web proxy"), which this gateway does not offer.
            if starts_like_tls_record(nextlayer.data_client()):
                record.decided = True
                nextlayer.layer = CloseLayer(context)
            return
        if not self._takes_part(client, record):
            return
        data = nextlayer.data_client()
        if not data and client.transport_protocol == "tcp":
            if not self._only_raw_tcp_could_take(context.server):
                raise exceptions.AddonHalt()  # nothing to classify yet: asked again when the client sends
            # Only raw-TCP listeners can take this port: decide now, so server-speaks-first protocols work.
        if client.transport_protocol == "tcp" and starts_like_tls_record(data):
            try:
                hello = parse_client_hello(data)
            except ValueError:
                hello = None  # not a valid ClientHello after all: classified as other TCP below
            else:
                if hello is None:
                    raise exceptions.AddonHalt()  # wait for the rest of the ClientHello; asked again on more data
            if hello is not None:
                nextlayer.layer = self._tls_layer(nextlayer, record, hello.sni)
                return
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
            self._dial_by_name(context.server, decision, port)
            nextlayer.layer = self._relay(context, record, decision, ignore=False)

    def _only_raw_tcp_could_take(self, server: connection.Server) -> bool:
        snapshot = self.state.snapshot
        if snapshot is None or server.address is None:
            return False
        port = int(server.address[1])
        gateway = snapshot.gateway
        candidates = {l.name: l for c in (Carries.TLS, Carries.HTTP, Carries.TCP) for l in gateway.candidates(c, port)}
        return bool(candidates) and all(listener.protocol == "TCP" for listener in candidates.values())

    def _tls_layer(self, nextlayer: layer.NextLayer, record: ConnectionRecord, sni: str | None) -> layer.Layer:
        context = nextlayer.context
        ip, port = self._destination(context.client, context.server, record)
        decision = self._decide(record, Carries.TLS, port, ip=ip, sni=sni)
        if decision.action is Action.CLOSE:
            return CloseLayer(context)
        self._dial_by_name(context.server, decision, port)
        if decision.action is Action.INTERCEPT:
            record.intercept = True
            stack = tunnel.LayerStack()
            stack /= layers.ServerTLSLayer(context)  # sets server.tls, so requests go upstream as https
            stack /= layers.ClientTLSLayer(context)
            return stack[0]
        return self._relay(context, record, decision, ignore=decision.action is Action.PASSTHROUGH)

    def _relay(self, context: Context, record: ConnectionRecord, decision: ConnectionDecision, *, ignore: bool) -> layer.Layer:
        """A raw relay to the decided destination, or, in parent mode, through a CONNECT to the parent.

        A passthrough tunnel without a parent is relayed directly once its upstream is open
        (egressproxy/engine/direct_relay.py).

        The parent is asked for the decided name (it resolves and applies its own policy); TLS stays
        end-to-end inside the tunnel.
        """
        self._allow_dial(record, context.server)
        parent = parent_for(self.state.snapshot, decision.route) if self.state.snapshot else None
        if parent is None and ignore:
            return DirectRelayLayer(context, record)  # bytes skip the layer stack once the upstream is open
        relay = layers.TCPLayer(context, ignore=ignore)
        if parent is None:
            return relay
        context.server.via = ("http", (parent.host, parent.port))
        record.upstreams[(parent.host, parent.port)] = Upstream(parent.host, parent.port, trusted=True)
        stack = HttpUpstreamProxy.make(context, True)
        stack /= relay
        return stack[0]

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
            bound = self.state.dns_bindings.name_for(ip)  # a name our DNS listener answered for this address
            decision = decide_connection(
                snapshot, carries, port, connect_host=record.connect_host, sni=sni, bound_host=bound, ip=ip
            )
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
        deny = decision.route.deny if decision.route is not None else None
        listener = decision.listener
        if deny is not None and deny.report and listener is not None and not listener.carries_http:
            # A Report-mode EgressDenyPolicy on a tunnel's route (HTTP routes report per request).
            self.state.metrics.policy_reports.labels("route-denied", str(deny.policy)).inc()
            log.info("report: %s would deny the connection to %s (enforcementMode Report)", deny.policy, decision.host)

    @staticmethod
    def _dial_by_name(server: connection.Server, decision: ConnectionDecision, port: int | None) -> None:
        """Transparent connections dial the name that was decided on (SNI), not the address the client chose."""
        if decision.host and port is not None and server.address is not None and not server.connected:
            server.address = (decision.host, port)

    @staticmethod
    def _allow_dial(record: ConnectionRecord, server: connection.Server) -> None:
        if server.address is not None:
            try:
                key = (canonical_host(str(server.address[0])), int(server.address[1]))
                record.upstreams.setdefault(key, Upstream(*key))
            except InvalidHostname:
                pass
