"""Failover and retries: a request that may need more than one attempt is sent through the in-process hop.

On the `request` hook (the body is buffered, after the body taps and before model rewrite and credential
injection, which the hop does per candidate), the candidates that speak another chat API than the client get
their translated request or a reason to be skipped (egressproxy/cross_format.py), and a request `choose_plan` gives a walk (egressproxy/failover_plan.py:
several AI provider candidates, or a TrafficPolicy retry) is registered with
the hop (egressproxy/upstream_hop.py) as a ticket - the replay buffer, the candidates, the decision - and
pointed at the hop's loopback address with the ticket in `x-egress-hop`. The dial guard is told that this
flow may open the hop (a trusted loopback address), and nothing else. The header is removed from the flow
once the request is sent, so captures and mitmweb never keep it.

The hop's listener starts with the gateway (`running`), or at the first walked request under a host tool
that has no `running` (tests).
"""

from __future__ import annotations

import logging

from mitmproxy import http

from egressproxy.candidate_request import CandidateContext
from egressproxy.credential_injection import OutgoingRequest
from egressproxy.cross_format import candidate_formats
from egressproxy.engine.answers import flow_record
from egressproxy.flowrecord import Check
from egressproxy.engine.guard import fail_closed
from egressproxy.failover_plan import choose_plan
from egressproxy.outlier_detection import outlier_of
from egressproxy.runtime.state import GatewayState
from egressproxy.upstream_hop import HOP_HEADER, HopTicket
from egressproxy.upstreams import Upstream

__all__ = ["Failover"]

log = logging.getLogger("egressproxy")

_ENC = ("utf-8", "surrogateescape")
_HOP_HOST = "127.0.0.1"


class Failover:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def running(self) -> None:
        await self.state.hop.start()

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        snapshot = self.state.snapshot
        frec = flow_record(flow)
        body = flow.request.raw_content
        if flow.response is not None or snapshot is None or frec.upstream is None or body is None:
            return
        req = flow.request
        limit = snapshot.compiled.replay_buffer_for(frec.listener)
        ai = sum(1 for c in frec.candidates if c.provider is not None) >= 2
        formats = candidate_formats(req.path, body, req.headers.get("content-encoding"), frec.candidates) if ai else {}
        plan = choose_plan(frec.candidates, req.method, len(body), limit, frec.retry, frec.attempt_timeout, outlier_of, formats)
        if isinstance(plan, str):
            if len(frec.candidates) > 1 or frec.retry is not None:
                # Host and path only: a query may hold a credential (a Passthrough key), which never reaches a log.
                log.debug("%s%s: sent to its first candidate only: %s", req.pretty_host, req.path.split("?", 1)[0], plan)
            return
        first = frec.upstream
        headers = [(n.decode(*_ENC), v.decode(*_ENC)) for n, v in req.headers.fields]
        authority = req.host_header or req.authority or first.host
        original = OutgoingRequest(req.method, first.scheme, authority, req.path, headers, body)
        ticket = HopTicket(
            snapshot=snapshot,
            plan=plan,
            context=CandidateContext(frec.route_ref, frec.rule, frec.listener),
            original=original,
            record=frec,
            first_authority=authority,
            read_timeout=frec.request_timeout or snapshot.gateway.request_timeout,
            backend_timeout=frec.attempt_timeout,
            formats=formats,
        )
        port = await self.state.hop.start()
        claim = self.state.hop.issue(ticket)
        frec.hop = claim.rsplit(" ", 1)[-1]
        record = self.state.connection(flow.client_conn.id)
        record.upstreams[(_HOP_HOST, port)] = Upstream(_HOP_HOST, port, "http", trusted=True)
        req.scheme, req.host, req.port = "http", _HOP_HOST, port
        req.headers[HOP_HEADER] = claim
        frec.checks.append(Check("failover" if plan.failover else "retry", detail=f"walk over {len(plan.attempts)} attempts"))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        flow.request.headers.pop(HOP_HEADER, None)

    def response(self, flow: http.HTTPFlow) -> None:
        flow.request.headers.pop(HOP_HEADER, None)

    def error(self, flow: http.HTTPFlow) -> None:
        flow.request.headers.pop(HOP_HEADER, None)
