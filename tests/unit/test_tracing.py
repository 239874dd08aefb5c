"""Spans per request (egressproxy/tracing.py): the client's trace kept, ours propagated, tags, sampling."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from egressproxy.flowrecord import Exchange, GenAiCall, Verdict
from egressproxy.observability_settings import CustomTag, OtlpTarget, TracingSettings
from egressproxy.tracing import Tracing, _span_exporter
from tests.unit.test_sinks import request

TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
SETTINGS = TracingSettings(
    "HTTPListenerPolicy/default/t",
    OtlpTarget("http://127.0.0.1:1", "http"),
    tags=(CustomTag("team", literal="pay"), CustomTag("agent", request_header="x-agent"),
          CustomTag("auth", request_header="authorization")),
)


def tracing_with_memory(settings: TracingSettings = SETTINGS) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracing(span_exporter=lambda _: exporter), exporter


def flushed(tracing: Tracing, exporter: InMemorySpanExporter):  # type: ignore[no-untyped-def]
    for provider in tracing.providers.values():
        provider.force_flush()
    return exporter.get_finished_spans()


def start(tracing: Tracing, headers: dict[str, str], settings: TracingSettings = SETTINGS):  # type: ignore[no-untyped-def]
    return tracing.start(settings, frozenset({"authorization"}), "POST", "https", "api.example.test", 443,
                         "/v1/x?key=secret", headers, 1.0)


def test_the_clients_trace_is_kept_and_our_span_goes_upstream() -> None:
    tracing, exporter = tracing_with_memory()
    span = start(tracing, {"traceparent": f"00-{TRACE}-{PARENT}-01", "x-agent": "a7", "authorization": "Bearer s"})
    assert span is not None and span.trace_id == TRACE and span.span_id != PARENT
    assert span.upstream_headers["traceparent"] == f"00-{TRACE}-{span.span_id}-01"
    tracing.request_finished(request(
        exchange=Exchange(span_id=span.span_id), status=429, decision="deny",
        verdict=Verdict.deny("rate-limited", "RateLimitPolicy/default/t"), gen_ai=GenAiCall("openai", "m", 3, 4, True),
    ))
    (finished,) = flushed(tracing, exporter)
    assert finished.parent is not None and f"{finished.parent.span_id:016x}" == PARENT
    attrs = dict(finished.attributes or {})
    assert attrs["url.path"] == "/v1/x"  # the query (a credential may be in it) is left out
    assert (attrs["team"], attrs["agent"], attrs["auth"]) == ("pay", "a7", "<redacted>")
    assert (attrs["http.response.status_code"], attrs["egress.reason"], attrs["gen_ai.usage.output_tokens"]) == (429, "rate-limited", 4)
    assert tracing.open == {}


def test_without_a_parent_the_rate_decides_and_an_unsampled_request_still_propagates() -> None:
    off = TracingSettings("p", OtlpTarget("http://127.0.0.1:1", "http"), sampling=0.0)
    tracing, exporter = tracing_with_memory(off)
    span = start(tracing, {}, off)
    assert span is not None
    flags = int(span.upstream_headers["traceparent"].split("-")[3], 16)
    assert not flags & 1
    tracing.request_finished(request(exchange=Exchange(span_id=span.span_id)))
    assert flushed(tracing, exporter) == ()


def test_grpc_and_http_exporters_are_built_for_their_targets() -> None:
    grpc = _span_exporter(TracingSettings("p", OtlpTarget("collector:4317", "grpc")))
    http = _span_exporter(TracingSettings("p", OtlpTarget("http://collector:4318", "http")))
    assert type(grpc).__module__.startswith("opentelemetry.exporter.otlp.proto.grpc")
    assert http._endpoint == "http://collector:4318/v1/traces"


def test_b3_propagators_read_the_clients_b3_and_write_ours() -> None:
    b3 = TracingSettings("p", OtlpTarget("http://127.0.0.1:1", "http"), propagators=("W3C_TRACE_CONTEXT", "B3"))
    tracing, exporter = tracing_with_memory(b3)
    span = start(tracing, {"x-b3-traceid": TRACE, "x-b3-spanid": PARENT, "x-b3-sampled": "1"}, b3)
    assert span is not None and span.trace_id == TRACE
    headers = span.upstream_headers
    assert headers["x-b3-traceid"] == TRACE and headers["x-b3-spanid"] == span.span_id
    assert headers["traceparent"].split("-")[1] == TRACE


# --- failed exports are counted ----------------------------------------------------------------------------------


class _Refusing:
    """An exporter whose collector is down: every export fails (or raises)."""

    def __init__(self, raises: bool) -> None:
        self.raises, self.shut = raises, False

    def export(self, spans):  # type: ignore[no-untyped-def]
        from opentelemetry.sdk.trace.export import SpanExportResult

        if self.raises:
            raise ConnectionError("refused")
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.shut = True


def test_a_failed_export_reports_its_spans_and_a_good_one_nothing() -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    from egressproxy.tracing import CountingExporter

    dropped: list[int] = []
    for raises in (False, True):
        refusing = _Refusing(raises)
        counting = CountingExporter(refusing, dropped.append)
        assert counting.export(["a", "b", "c"]) == SpanExportResult.FAILURE
        counting.shutdown()
        assert refusing.shut  # everything else passes through
    assert CountingExporter(InMemorySpanExporter(), dropped.append).export([]) == SpanExportResult.SUCCESS
    assert dropped == [3, 3]


def test_the_span_ends_when_the_response_was_complete_not_when_its_record_arrived() -> None:
    """The finished record reaches the sinks after the response is written (egressproxy/deferred_work.py)."""
    tracing, exporter = tracing_with_memory()
    span = start(tracing, {})  # started at 1.0 (wall clock)
    assert span is not None
    tracing.request_finished(request(exchange=Exchange(span_id=span.span_id), started=1.0, duration=0.25))
    (finished,) = flushed(tracing, exporter)
    assert (finished.start_time, finished.end_time) == (1_000_000_000, 1_250_000_000)
