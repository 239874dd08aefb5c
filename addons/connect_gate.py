"""CONNECT: decided on its authority before any tunnel opens; a denial is a 403 with the JSON body.

Under mitmweb a denied CONNECT is also added to the flow list (mitmproxy's view only holds flows that reached
`requestheaders`, which a CONNECT never does), marked and commented like any other denial. The view is looked
up by name on the running master, never imported, so `egressproxy run` (no view) is unaffected.
"""

from __future__ import annotations

from mitmproxy import ctx, http

from egressproxy.decisions import ConnectionDecision, decide_connect, parent_for, route_name
from egressproxy.engine.answers import answer_denied, error_response, flow_record
from egressproxy.engine.guard import fail_closed
from egressproxy.engine.flow_trace import annotate
from egressproxy.flowrecord import Check, ConnectionRecord, Verdict
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Snapshot


class ConnectGate:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    @fail_closed
    async def http_connect(self, flow: http.HTTPFlow) -> None:
        snapshot = self.state.snapshot
        record = self.state.connection(flow.client_conn.id)
        credentials = flow.request.headers.pop("proxy-authorization", None)  # never forwarded anywhere
        frec = flow_record(flow)
        frec.identity = record.identity
        if snapshot is None:
            answer_denied(flow, Verdict.deny("no-route", message="no configuration loaded"))
            _show(flow, self.state.flow_traces)
            return
        frec.gateway = f"{snapshot.gateway.ref.namespace}/{snapshot.gateway.ref.name}"
        decision = decide_connect(snapshot, flow.request.host, flow.request.port)
        frec.listener = decision.listener.name if decision.listener else None
        identity, challenge = await self.state.proxy_auth.verify(snapshot, frec.listener, credentials)
        if challenge is not None:  # authentication comes before authorisation: 407 before any 403
            self.state.metrics.denials.labels(challenge.reason).inc()
            answer_denied(flow, challenge)
            _show(flow, self.state.flow_traces)
            return
        if identity is not None:
            record.identity = frec.identity = identity
        frec.verdict = decision.verdict
        frec.host, frec.port = decision.host or flow.request.host, flow.request.port
        frec.route = route_name(decision.route) if decision.route is not None else None
        frec.checks.append(Check("connect", decision.verdict.policy, "allow" if decision.verdict.allowed else "deny", decision.verdict.reason))
        if not decision.verdict.allowed:
            self.state.metrics.denials.labels(decision.verdict.reason).inc()
            self.state.metrics.connections.labels(frec.gateway, frec.listener or "none", "none", "CONNECT", "deny").inc()
            record.denied_connect = (flow.request.host, frec.listener, decision.verdict)
            answer_denied(flow, decision.verdict)
            _show(flow, self.state.flow_traces)
            return
        assert decision.host is not None
        if not await self._destination_ok(flow, snapshot, record, decision):
            return
        record.connect_host = decision.host
        record.port = flow.request.port
        record.generation = snapshot.generation
        flow.request.host = decision.host  # dial the canonical spelling, never a numeric or mixed-case variant
        frec.host, frec.port = decision.host, flow.request.port
        if self.state.flow_traces:
            annotate(flow, frec, record)  # an opened tunnel gets no `response`: its trace is written now


    async def _destination_ok(self, flow: http.HTTPFlow, snapshot: Snapshot, record: ConnectionRecord, decision: ConnectionDecision) -> bool:
        """For a tunnel that can only go to its authority (no listener that routes requests could take it, no
        parent), check the address before answering 200: a destination the SSRF guard or reverse DNS refuses
        gets its 403 now, an unresolvable one a 502, and the checked address is pinned for the dial."""
        listener = decision.listener
        if listener is None or listener.carries_http or parent_for(snapshot, decision.route) is not None:
            return True
        host, port = decision.host or "", flow.request.port
        destination = await self.state.dialer.destination(snapshot, record, host, port)
        if destination.address is not None:
            record.pinned_addresses[(host, port)] = destination.address
            return True
        if destination.denial is not None:
            answer_denied(flow, destination.denial)
        else:
            flow.response = error_response(flow, "upstream-unreachable", f"upstream unreachable: {destination.unreachable}")
        _show(flow, self.state.flow_traces)
        return False


def _show(flow: http.HTTPFlow, traces: bool) -> None:
    """Add a denied CONNECT to mitmweb's (or mitmproxy console's) flow list when the host has one."""
    if not traces:
        return  # `egressproxy run`: no flow list, no trace (GatewayState.flow_traces)
    annotate(flow, flow_record(flow), None)  # shown now, before http_connect_error writes it again
    master = getattr(ctx, "master", None)
    view = master.addons.get("view") if master is not None else None
    if view is not None:
        view.add([flow])
