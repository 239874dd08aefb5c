"""Tracing (HTTPListenerPolicy `tracing`): a span per request, exported over OTLP, W3C trace context propagated.

Each request on a listener with tracing gets one span (kind CLIENT: the gateway's call on the workload's behalf).
The client's `traceparent` is its parent, so the trace id is kept; the request goes upstream with a new
`traceparent` naming our span (`tracestate` passed on). `propagators` may add W3C baggage and B3 (multi-header
or single `b3`), read from the client and written upstream the same way. Sampling: a parent the client marked sampled is
followed; otherwise the policy's rate decides (TraceIdRatioBased). An unsampled request still carries a
`traceparent` upstream (flag 00), so the trace stays connected.

Spans are exported by OpenTelemetry's BatchSpanProcessor, in its own thread, from a bounded queue (2048 spans):
a collector that is down or slow costs dropped spans, never latency; a failed export's spans are counted
(`on_dropped`, the gateway's `egress_trace_span_drops_total{reason="export-failed"}`). Attributes follow the HTTP semantic
conventions (`url.path` without its query: a query may carry a credential); custom tags read a literal, an
environment variable (at compile time) or a request header (a credential header prints redacted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from egressproxy.access_log_format import REDACTED
from egressproxy.flowrecord import FinishedRequest
from egressproxy.observability_settings import TracingSettings
from egressproxy.sinks import Sink

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

__all__ = ["Tracing", "RequestSpan", "CountingExporter", "MAX_QUEUED_SPANS"]

log = logging.getLogger("egressproxy")
MAX_QUEUED_SPANS = 2048
MAX_OPEN_SPANS = 100_000  # requests in flight with a span; past this, new requests go untraced
EXPORT_TIMEOUT = 5.0  # seconds per export attempt (in the processor's thread)


class RequestSpan:
    """One request's span and the headers to send upstream."""

    def __init__(self, span: Span, upstream_headers: Mapping[str, str]) -> None:
        self.span = span
        self.upstream_headers = upstream_headers
        context = span.get_span_context()
        self.trace_id = f"{context.trace_id:032x}"
        self.span_id = f"{context.span_id:016x}"

    def finish(self, record: FinishedRequest) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        if record.status:
            span.set_attribute("http.response.status_code", record.status)
        attributes: dict[str, Any] = {
            "egress.gateway": record.gateway,
            "egress.listener": record.listener,
            "egress.route": record.route,
            "egress.backend": record.backend,
            "egress.identity": str(record.identity),
            "egress.decision": record.decision,
        }
        verdict = record.verdict
        if verdict is not None and not verdict.allowed:
            attributes["egress.reason"], attributes["egress.policy"] = verdict.reason, verdict.policy
        if record.error:
            attributes["error.type"] = record.error
            span.set_status(Status(StatusCode.ERROR, record.error))
        elif record.status and record.status >= 500:
            attributes["error.type"] = str(record.status)
            span.set_status(Status(StatusCode.ERROR))
        call = record.gen_ai
        if call is not None:
            attributes["gen_ai.provider.name"] = call.provider
            attributes["gen_ai.request.model"] = call.request_model
            if call.reported:
                attributes["gen_ai.usage.input_tokens"] = call.input_tokens
                attributes["gen_ai.usage.output_tokens"] = call.output_tokens
        span.set_attributes({k: v for k, v in attributes.items() if v is not None and v != ""})
        # Ends when the response was complete: the record reaches this sink after the response is written
        # (egressproxy/deferred_work.py), so "now" would be later.
        span.end(end_time=int((record.started + record.duration) * 1e9))


class Tracing(Sink):
    """TracerProviders by (collector, service name, sampling rate), made on first use and kept; and the sink
    that ends each request's span when its finished record arrives."""

    name = "tracing"

    def __init__(
        self,
        span_exporter: Callable[[TracingSettings], Any] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self.span_exporter = span_exporter or _span_exporter  # tests pass an in-memory exporter
        self.on_dropped = on_dropped  # told how many spans a failed export lost
        self.providers: dict[tuple[Any, ...], TracerProvider] = {}
        self.open: dict[str, RequestSpan] = {}  # span id -> the span of a request in flight
        self.propagators: dict[tuple[str, ...], Any] = {}
        self._headers_read: dict[tuple[Any, ...], frozenset[str]] = {}

    def request_finished(self, record: FinishedRequest) -> None:
        span_id = record.exchange.span_id if record.exchange is not None else None
        span = self.open.pop(span_id, None) if span_id else None
        if span is not None:
            span.finish(record)

    def start(
        self,
        settings: TracingSettings,
        redacted: frozenset[str],
        method: str,
        scheme: str,
        host: str,
        port: int,
        path: str,
        headers: Mapping[str, str],
        started: float,
    ) -> RequestSpan | None:
        """Start the span of a request; `headers` are the client's (lower-case names)."""
        if len(self.open) >= MAX_OPEN_SPANS:
            return None
        from opentelemetry.trace import SpanKind, set_span_in_context

        propagator = self.propagator(settings.propagators)
        parent = propagator.extract({k: v for k in propagator.fields if (v := headers.get(k))})
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.scheme": scheme,
            "server.address": host,
            "server.port": port,
            "url.path": path.partition("?")[0],
        }
        for tag in settings.tags:
            value = tag.literal
            if tag.request_header is not None:
                found = headers.get(tag.request_header)
                if found is not None:
                    value = REDACTED if tag.request_header in redacted else found
            if value is not None:
                attributes[tag.name] = value
        tracer = self._provider(settings).get_tracer("egressproxy")
        span = tracer.start_span(
            method, context=parent, kind=SpanKind.CLIENT, attributes=attributes, start_time=int(started * 1e9)
        )
        carrier: dict[str, str] = {}
        propagator.inject(carrier, context=set_span_in_context(span, parent))
        opened = self.open[f"{span.get_span_context().span_id:016x}"] = RequestSpan(span, carrier)
        return opened

    def headers_read(self, settings: TracingSettings) -> frozenset[str]:
        """The request headers a span reads (lower case): its propagators' and its header tags'."""
        key = (settings.propagators, settings.tags)
        found = self._headers_read.get(key)
        if found is None:
            tagged = {tag.request_header for tag in settings.tags if tag.request_header}
            found = self._headers_read[key] = frozenset(self.propagator(settings.propagators).fields) | tagged
        return found

    def propagator(self, names: tuple[str, ...]) -> Any:
        """The composite propagator of `names` (made once per list)."""
        found = self.propagators.get(names)
        if found is None:
            found = self.propagators[names] = _propagator(names)
        return found

    def _provider(self, settings: TracingSettings) -> TracerProvider:
        key = (settings.target, settings.service_name, settings.sampling)
        provider = self.providers.get(key)
        if provider is None:
            exporter = self.span_exporter(settings)
            if self.on_dropped is not None:
                exporter = CountingExporter(exporter, self.on_dropped)
            provider = self.providers[key] = _make_provider(settings, exporter)
        return provider

    def shutdown(self) -> None:
        """Export what is queued (bounded by the exporter's timeout), then stop the processors' threads."""
        for provider in self.providers.values():
            try:
                provider.shutdown()
            except Exception as e:
                log.warning("tracing: shutting an exporter down failed: %r", e)


class CountingExporter:
    """A span exporter that reports the spans of each failed export (the SDK only logs them), then passes
    everything else through to the exporter it wraps."""

    def __init__(self, exporter: Any, on_dropped: Callable[[int], None]) -> None:
        self.exporter = exporter
        self.on_dropped = on_dropped

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            result = self.exporter.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result != SpanExportResult.SUCCESS:
            self.on_dropped(len(spans))
        return result

    def __getattr__(self, name: str) -> Any:  # shutdown, force_flush
        return getattr(self.exporter, name)


def _propagator(names: tuple[str, ...]) -> Any:
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagate import composite
    from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    kinds: dict[str, Callable[[], Any]] = {
        "W3C_TRACE_CONTEXT": TraceContextTextMapPropagator,
        "W3C_BAGGAGE": W3CBaggagePropagator,
        "B3": B3MultiFormat,
        "B3_SINGLE_HEADER": B3SingleFormat,
    }
    return composite.CompositePropagator([kinds[name]() for name in names if name in kinds])


def _make_provider(settings: TracingSettings, exporter: Any) -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        shutdown_on_exit=False,  # the gateway shuts it down itself, within the exporter's timeout
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sampling)),
    )
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=MAX_QUEUED_SPANS, schedule_delay_millis=1000)
    )
    return provider


def _span_exporter(settings: TracingSettings) -> Any:
    target = settings.target
    if target.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter(endpoint=target.endpoint, insecure=True, timeout=EXPORT_TIMEOUT)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = target.endpoint if target.endpoint.endswith("/v1/traces") else f"{target.endpoint}/v1/traces"
    return OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT)
