"""External auth (docs/ext-auth.md): each routed request under a TrafficPolicy `extAuth` is checked by the
GatewayExtension's ext_authz gRPC service before it goes upstream.

A thin translator: the policy lookup, the CheckRequest, the call and the meaning of its answer are
egressproxy/ext_auth*.py's. Runs in `requestheaders` after the routing and request policies, and before rate
limits spend a budget and credentials are injected (so the service sees the client's headers, never the
gateway's credentials). The call is async (grpc.aio): only this request waits for it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mitmproxy import http

from egressproxy.engine.answers import answer_denied, flow_record
from egressproxy.engine.guard import fail_closed
from egressproxy.engine.policy_reports import note_reports
from egressproxy.ext_auth import ExtAuthAnswer, ExtAuthFate, fate_of
from egressproxy.flowrecord import Check, FlowRecord
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Snapshot

if TYPE_CHECKING:
    from egressproxy.ext_auth_client import ExtAuthClient
    from egressproxy.ext_auth_protocol import CheckInput

__all__ = ["ExtAuth"]

log = logging.getLogger("egressproxy")


class ExtAuth:
    step = "ext-auth"  # idle without any TrafficPolicy `extAuth` (egressproxy/runtime/idle_steps.py)

    @staticmethod
    def idle_on(snapshot: Snapshot) -> bool:
        return not snapshot.compiled.ext_auth.policies

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        # Envoy's generated API and grpc cost ~0.4 s to import: only a gateway with an ExtAuth policy pays it.
        self._client: ExtAuthClient | None = None

    @property
    def client(self) -> ExtAuthClient:
        if self._client is None:
            from egressproxy.ext_auth_client import ExtAuthClient

            self._client = ExtAuthClient(self.state.dialer)
        return self._client

    @client.setter
    def client(self, client: ExtAuthClient) -> None:
        self._client = client

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        frec = flow_record(flow)
        snapshot = self.state.snapshot
        if flow.response is not None or snapshot is None or frec.verdict is None or not frec.verdict.allowed:
            return
        backend = frec.upstream.backend if frec.upstream is not None else None
        backend_ref = backend.ref if backend is not None and backend.type != "Service" else None
        policy = snapshot.compiled.ext_auth.for_request(snapshot.policies, frec.route_ref, backend_ref, frec.listener, frec.rule)
        if policy is None or policy.service is None:
            return
        service = policy.service
        from egressproxy.ext_auth_protocol import build_check_request

        check = build_check_request(_check_input(flow, frec), policy.context_extensions, service.headers_to_forward)
        answer = await self.client.check(snapshot, service, check)
        if answer.failure is not None:
            log.warning("ext auth: %s for %s %s: %s", service.ref, flow.request.method, frec.host, answer.failure)
        fate = fate_of(policy, answer)
        detail = fate.note.removeprefix(f"ext auth {service.ref}: ").removeprefix(_verdict(fate))
        frec.checks.append(Check("ext-auth", str(service.ref), _verdict(fate), detail=detail.strip("; ")))
        note_reports(self.state.metrics, flow, [fate.report] if fate.report is not None else [])
        if fate.denial is None:
            _apply_edits(flow.request.headers, fate.answer)
        else:
            self._deny(flow, fate)

    def _deny(self, flow: http.HTTPFlow, fate: ExtAuthFate) -> None:
        assert fate.denial is not None
        self.state.metrics.denials.labels(fate.denial.reason).inc()
        answer_denied(flow, fate.denial)
        if fate.service_response:
            answer = fate.answer
            response = http.Response.make(fate.denial.status_code, answer.body)
            response.headers.clear()
            for name, value in answer.headers:
                response.headers.add(name, value)
            response.headers["x-egress-denied"] = fate.denial.reason
            response.headers["content-length"] = str(len(answer.body))
            flow.response = response

    async def done(self) -> None:
        if self._client is not None:
            await self._client.close()


def _apply_edits(headers: http.Headers, answer: ExtAuthAnswer) -> None:
    """The OK answer's header edits, then its removals (pseudo-headers and Host are never removed, as in Envoy)."""
    for edit in answer.headers_to_set:
        present = edit.name in headers
        if edit.append:
            headers.add(edit.name, edit.value)
        elif (edit.if_absent and present) or (edit.if_present and not present):
            continue
        else:
            headers[edit.name] = edit.value
    for name in answer.headers_to_remove:
        if not name.startswith(":") and name != "host" and name in headers:
            del headers[name]


def _check_input(flow: http.HTTPFlow, frec: FlowRecord) -> CheckInput:
    from egressproxy.ext_auth_protocol import CheckInput

    request = flow.request
    peer = flow.client_conn.peername
    length = request.headers.get("content-length", "")
    return CheckInput(
        request_id=flow.id,
        method=request.method,
        path=request.path,
        host=frec.host or request.pretty_host,
        scheme=request.scheme,
        protocol=request.http_version,
        headers=tuple((k, v) for k, v in request.headers.items(multi=True)),
        source_address=str(peer[0]) if peer else "",
        source_port=int(peer[1]) if peer else 0,
        destination_host=frec.host or request.pretty_host,
        destination_port=frec.port or request.port,
        identity=frec.identity,
        body_size=int(length) if length.strip().isdigit() else None,
    )


def _verdict(fate: ExtAuthFate) -> str:
    return "deny" if fate.denial is not None else "report" if fate.report is not None else "allow"
