"""Each HTTP request ends in one finished record for the sinks (metrics among them), and its decision trace
on the flow for mitmweb (egressproxy/engine/flow_trace.py; only where flows are shown: `GatewayState.flow_traces`).

The record is finished once, at the end of the response (`response` fires after a streamed body's last chunk)
or at the error that ended the request, from the flow's record that the deciding addons wrote. mitmproxy fires
those hooks before it writes the response, so only what must be taken then is (the end time, the connection's
counts); the record is built and handed to the sinks when the hook's task has ended, after the write
(`GatewayState.finishing`, egressproxy/deferred_work.py). The request
headers the access log prints are taken on `requestheaders`, as the client sent them: before any credential is
injected (a printed `%REQ(...)%` can never show an injected secret).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from mitmproxy import http

from egressproxy.capture_records import REDACTED, CapturePlan, CapturePlans, redacted_url
from egressproxy.engine.answers import flow_record
from egressproxy.engine.mitmproxy_boundary import current_hook_task
from egressproxy.engine.flow_trace import annotate
from egressproxy.flowrecord import Exchange, FinishedRequest, FlowRecord
from egressproxy.runtime.state import GatewayState

__all__ = ["FlowMetrics"]


class FlowMetrics:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.plans = CapturePlans()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        record = flow_record(flow)
        record.request_headers, record.request_path = flow.request.headers.fields, flow.request.path

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def http_connect_error(self, flow: http.HTTPFlow) -> None:
        """A CONNECT answered with a denial (or 407): mitmproxy fires no `response` for it, yet it is a request
        the workload made, and its denial belongs in the metrics and the access log."""
        self._finish(flow)

    def done(self) -> None:
        """Shutdown: whatever finishing is still deferred reaches the sinks before they stop."""
        self.state.finishing.flush()

    def _finish(self, flow: http.HTTPFlow) -> None:
        """What must hold when the response is complete is taken now (its end time, the connection's counts, the
        capture plan of the serving snapshot); building the record and the sinks' work run after the response is
        written (egressproxy/deferred_work.py): the client does not wait for them."""
        if flow.metadata.get("egress_observed"):
            return
        flow.metadata["egress_observed"] = True
        ended = time.monotonic()
        record = flow_record(flow)
        connection = self.state.connections.get(flow.client_conn.id)
        if connection is not None:
            connection.requests += 1
            connection.request_listener, connection.request_route = record.listener, record.route
        plan = self.plans.plan(self.state.snapshot, record)
        sni = connection.sni if connection else None
        sinks = self.state.sinks
        self.state.finishing.defer(
            lambda: sinks.request_finished(finished_request(flow, record, sni, plan, ended)), after=current_hook_task()
        )
        if self.state.flow_traces:
            annotate(flow, record, connection, captured=sinks.captures)


def finished_request(
    flow: http.HTTPFlow, record: FlowRecord, sni: str | None, plan: CapturePlan | None = None, ended: float | None = None
) -> FinishedRequest:
    """The finished record, its headers and URL redacted by `plan` (credential values never reach a sink).

    `ended` is when the request was complete (`time.monotonic()`; now if not given): the record may be built
    later, after the response was written, and its duration must not grow by that wait."""
    plan = plan or CapturePlan()
    response = flow.response
    redact = plan.redact_headers
    request_text, request_raw = _header_forms(flow.request.headers.fields, redact)
    response_text, response_raw = _header_forms(response.headers.fields, redact) if response is not None else ((), ())
    as_sent = record.request_headers  # before any injection (requestheaders); the exchange prints these
    if as_sent is not None and as_sent is not flow.request.headers.fields:
        request_raw = _scrubbed(as_sent, redact)
    return FinishedRequest(
        gateway=record.gateway,
        listener=record.listener,
        route=record.route,
        backend=record.backend,
        identity=record.identity,
        verdict=record.verdict,
        decision=record.decision,
        error=record.error,
        host=record.host or flow.request.host or None,  # a denied CONNECT: its authority
        sni=sni,
        method=flow.request.method,
        url=redacted_url(flow.request.url, plan.redact_query),
        status=response.status_code if response is not None else None,
        started=flow.request.timestamp_start,
        duration=max(0.0, (time.monotonic() if ended is None else ended) - record.started),
        request_body=record.request_body,
        response_body=record.response_body,
        gen_ai=record.gen_ai,
        exchange=_exchange(flow, record, request_raw, response_raw),
        request_headers=request_text,
        response_headers=response_text,
        capture=plan,
    )


def _exchange(flow: http.HTTPFlow, record: FlowRecord, request_headers: RawFields, response_headers: RawFields) -> Exchange:
    request, response = flow.request, flow.response
    if record.request_body is not None:
        received = record.request_body.size
    else:
        received = len(request.raw_content or b"")
    if record.response_body is not None:
        sent = record.response_body.size
    else:
        sent = len(response.raw_content or b"") if response is not None else 0
    server = flow.server_conn
    return Exchange(
        request_headers=request_headers,
        response_headers=response_headers,
        path=record.request_path if record.request_path is not None else request.path,
        authority=request.authority or request.host_header or "",
        scheme=request.scheme,
        protocol=request.http_version,
        bytes_received=received,
        bytes_sent=sent,
        client_address=_address(flow.client_conn.peername),
        upstream_address=_address(server.peername) if server is not None and server.timestamp_start else None,
        trace_id=record.trace_id,
        span_id=record.span_id,
    )


RawFields = tuple[tuple[bytes, bytes], ...]


def _header_forms(
    fields: Iterable[tuple[bytes, bytes]], redact: frozenset[str]
) -> tuple[tuple[tuple[str, str], ...], RawFields]:
    """In one pass, the headers as the finished record keeps them ((lower-case name, text value), credential
    values replaced by `REDACTED`) and as the exchange keeps them (bytes, replaced by `REDACTED_VALUE`); a
    redacted value is never decoded."""
    text: list[tuple[str, str]] = []
    raw: list[tuple[bytes, bytes]] = []
    for name, value in fields:
        lower = name.decode("latin-1").lower()
        if lower in redact:
            text.append((lower, REDACTED))
            raw.append((name, REDACTED_VALUE))
        else:
            text.append((lower, value.decode("utf-8", "replace")))
            raw.append((name, value))
    return tuple(text), tuple(raw)


def _scrubbed(fields: Iterable[tuple[bytes, bytes]], redact: frozenset[str]) -> RawFields:
    """Header fields with each credential-bearing value replaced, so no sink holds a secret (printers redact by
    name again, whatever their format asks)."""
    return tuple((n, REDACTED_VALUE if n.decode("latin-1").lower() in redact else v) for n, v in fields)


REDACTED_VALUE = b"<redacted>"


def _address(peer: object) -> str | None:
    if not isinstance(peer, tuple) or len(peer) < 2:
        return None
    host = str(peer[0])
    return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"

