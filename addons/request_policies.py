"""Request-level deny-type policies after routing: `buffer.maxRequestBytes` (413), CEL `celValidation` and `rbac`.

The decisions are egressproxy/request_policies.py's; this addon reads the routed request from the flow record
and translates. Without an expression that mentions `body`, the CEL policies are decided in `requestheaders`
(before the body is read); with one, in `request`, once mitmproxy has the whole body. A Content-Length past the
limit is answered 413 in `requestheaders`; a body without one (chunked) is counted as mitmproxy reads it and
answered 413 as soon as it passes the limit (egressproxy/engine/mitmproxy_boundary.py, `BODY_LIMIT_KEY`), before
anything is sent upstream; the `request` hook checks the complete body again. Report-mode denials are counted and logged, the request goes
on. Each policy consulted and its verdict is written on the flow's comment (mitmweb shows it).
"""

from __future__ import annotations

from mitmproxy import http

from egressproxy.cel_programs import RequestVariables, json_body
from egressproxy.engine.answers import answer_denied, denial_response, flow_record
from egressproxy.engine.guard import fail_closed
from egressproxy.engine.mitmproxy_boundary import BODY_LIMIT_KEY
from egressproxy.engine.policy_reports import note_reports
from egressproxy.flowrecord import Check, FlowRecord, Verdict
from egressproxy.request_policies import RequestPolicies as Policies
from egressproxy.request_policies import evaluate, size_verdict
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Snapshot

__all__ = ["RequestPolicies"]


class RequestPolicies:
    step = "request-policies"  # idle without any rbac, celValidation or buffer limit (runtime/idle_steps.py)

    @staticmethod
    def idle_on(snapshot: Snapshot) -> bool:
        table = snapshot.compiled.request_policies
        return not (table.rbac or table.validation or table.limits)

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.pending: dict[str, Policies] = {}  # flow id -> policies decided once the body is read

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        frec = flow_record(flow)
        snapshot = self.state.snapshot
        if flow.response is not None or snapshot is None or frec.verdict is None or not frec.verdict.allowed:
            return
        backend = frec.upstream.backend if frec.upstream is not None else None
        backend_ref = backend.ref if backend is not None and backend.type != "Service" else None
        policies = snapshot.compiled.request_policies.for_request(
            snapshot.policies, frec.route_ref, backend_ref, frec.listener, frec.rule
        )
        if policies.limit is None and not policies.has_cel:
            return
        denial = size_verdict(policies.limit, _content_length(flow.request))
        if denial is not None:
            self._deny(flow, denial)
            return
        if policies.needs_body or policies.limit is not None:
            self.pending[flow.id] = policies
        if policies.limit is not None and _content_length(flow.request) is None:
            # Unknown length (chunked): answered 413 as soon as the bytes read pass the limit, mid-upload.
            verdict = size_verdict(policies.limit, policies.limit.max_bytes + 1)
            assert verdict is not None
            flow.metadata[BODY_LIMIT_KEY] = (policies.limit.max_bytes, lambda: self._too_large(flow, verdict))
        if not policies.needs_body:
            self._evaluate(flow, frec, policies, None)

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        policies = self.pending.pop(flow.id, None)
        if policies is None or flow.response is not None:
            return
        content = flow.request.raw_content or b""
        denial = size_verdict(policies.limit, len(content))
        if denial is not None:
            self._deny(flow, denial)
            return
        if policies.needs_body:
            self._evaluate(flow, flow_record(flow), policies, json_body(flow.request.get_content(strict=False)))

    def response(self, flow: http.HTTPFlow) -> None:
        self.pending.pop(flow.id, None)  # answered before the body ended (a 413 mid-upload)

    def error(self, flow: http.HTTPFlow) -> None:
        self.pending.pop(flow.id, None)

    def _too_large(self, flow: http.HTTPFlow, verdict: Verdict) -> http.Response:
        """The 413 mitmproxy sends mid-upload (egressproxy/engine/mitmproxy_boundary.py, BODY_LIMIT_KEY)."""
        self.pending.pop(flow.id, None)
        self.state.metrics.denials.labels(verdict.reason).inc()
        return denial_response(flow, verdict)

    def _evaluate(self, flow: http.HTTPFlow, frec: FlowRecord, policies: Policies, body: object) -> None:
        outcome = evaluate(policies, _variables(flow, frec, body, "request.headers" in policies.reads))
        frec.checks.extend(Check("policy", s.policy, s.verdict, detail=s.detail) for s in outcome.steps)
        note_reports(self.state.metrics, flow, outcome.reports)
        if outcome.denial is not None:
            self._deny(flow, outcome.denial)

    def _deny(self, flow: http.HTTPFlow, verdict: Verdict) -> None:
        self.pending.pop(flow.id, None)
        self.state.metrics.denials.labels(verdict.reason).inc()
        answer_denied(flow, verdict)


def _content_length(request: http.Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _variables(flow: http.HTTPFlow, frec: FlowRecord, body: object, with_headers: bool = True) -> RequestVariables:
    """The request's CEL variables; the headers map only when an expression reads it (cel_programs.py)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in flow.request.headers.fields if with_headers else ():
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("utf-8", "replace")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    identity = frec.identity
    peer = flow.client_conn.peername
    return RequestVariables(
        headers,
        flow.request.path,
        flow.request.method.upper(),
        frec.host or flow.request.pretty_host,
        str(peer[0]) if peer else "",
        identity.namespace if identity is not None else "unknown",
        identity.service_account if identity is not None else "unknown",
        body,
    )
