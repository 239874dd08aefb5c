"""MetricsSink: request metrics with the DESIGN.md 4.1 labels, connection bytes and durations (4.2)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from egressproxy.flowrecord import FinishedConnection, Identity
from egressproxy.metrics import GatewayMetrics, MetricsSink, status_class
from egressproxy.runtime.state import GatewayState
from egressproxy.sinks import Sink
from tests.unit.test_sinks import connection, request


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_finished_request_counts_with_the_contract_labels() -> None:
    metrics = GatewayMetrics()
    MetricsSink(metrics, worker=2).request_finished(
        request(identity=Identity("team-a", "agent"), backend="default/openai", status=503, decision="error", duration=0.3)
    )
    labels = dict(
        gateway="default/eg",
        listener="https",
        route="default/api",
        backend="default/openai",
        namespace="team-a",
        serviceaccount="agent",
        decision="error",
        status_class="5xx",
    )
    assert sample(metrics, "egress_requests_total", **labels) == 1
    assert sample(metrics, "egress_request_duration_seconds_count", **labels) == 1
    assert sample(metrics, "egress_request_duration_seconds_sum", **labels) == 0.3
    assert sample(metrics, "egress_worker_requests_total", worker="2") == 1


def test_missing_names_and_no_response_are_labelled_none() -> None:
    metrics = GatewayMetrics()
    MetricsSink(metrics).request_finished(request(listener=None, route=None, status=None, decision="deny"))
    assert (
        sample(
            metrics,
            "egress_requests_total",
            gateway="default/eg",
            listener="none",
            route="none",
            backend="none",
            namespace="unknown",
            serviceaccount="unknown",
            decision="deny",
            status_class="none",
        )
        == 1
    )


def test_a_finished_connection_adds_its_bytes_per_direction_and_observes_its_duration() -> None:
    metrics = GatewayMetrics()
    sink = MetricsSink(metrics)
    sink.connection_finished(connection(bytes_upstream=100, bytes_downstream=2500, duration=1.5))
    sink.connection_finished(connection(bytes_upstream=1, bytes_downstream=0, duration=0.5))
    route = dict(gateway="default/eg", listener="tls", route="default/pinned")
    assert sample(metrics, "egress_connection_bytes_total", **route, direction="upstream") == 101
    assert sample(metrics, "egress_connection_bytes_total", **route, direction="downstream") == 2500
    assert sample(metrics, "egress_connection_duration_seconds_count", **route) == 2
    assert sample(metrics, "egress_connection_duration_seconds_sum", **route) == 2.0


def test_an_undecided_connection_is_labelled_none() -> None:
    metrics = GatewayMetrics()
    MetricsSink(metrics).connection_finished(connection(gateway="", listener=None, route=None))
    assert sample(metrics, "egress_connection_duration_seconds_count", gateway="none", listener="none", route="none") == 1


def test_the_gateway_state_sends_records_to_metrics_and_counts_a_failing_sink(tmp_path: Path) -> None:
    class Broken(Sink):
        name = "broken"

        def connection_finished(self, record: FinishedConnection) -> None:
            raise OSError("down")

    state = GatewayState(tmp_path)
    state.sinks.register(Broken())
    state.sinks.connection_finished(connection())
    state.sinks.request_finished(request())
    text = generate_latest(state.metrics.registry).decode()
    assert 'egress_sink_errors_total{sink="broken"} 1.0' in text
    assert "egress_connection_duration_seconds_count" in text
    assert state.metrics.registry.get_sample_value(
        "egress_requests_total",
        dict(gateway="default/eg", listener="https", route="default/api", backend="none", namespace="unknown",
             serviceaccount="unknown", decision="allow", status_class="2xx"),
    ) == 1


def test_status_class() -> None:
    assert [status_class(s) for s in (None, 0, 101, 204, 302, 404, 504)] == ["none", "none", "1xx", "2xx", "3xx", "4xx", "5xx"]


# --- token usage and bounded label values ----------------------------------------------------------------------


def test_token_usage_is_a_histogram_per_token_type_provider_and_requested_model() -> None:
    from egressproxy.flowrecord import GenAiCall

    metrics = GatewayMetrics()
    sink = MetricsSink(metrics)
    sink.request_finished(request(gen_ai=GenAiCall("anthropic", "claude-x", 127, 9, reported=True)))
    sink.request_finished(request(gen_ai=GenAiCall("anthropic", "claude-x", 3, 1, reported=True)))
    sink.request_finished(request(gen_ai=GenAiCall("openai", "gpt-x")))  # reported no usage: not observed
    labels = dict(gen_ai_provider_name="anthropic", gen_ai_request_model="claude-x")
    assert sample(metrics, "gen_ai_client_token_usage_count", gen_ai_token_type="input", **labels) == 2
    assert sample(metrics, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", **labels) == 130
    assert sample(metrics, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **labels) == 10
    assert sample(metrics, "gen_ai_client_token_usage_bucket", gen_ai_token_type="input", le="256.0", **labels) == 2
    assert sample(metrics, "gen_ai_client_token_usage_bucket", gen_ai_token_type="input", le="64.0", **labels) == 1
    text = generate_latest(metrics.registry).decode()
    assert 'gen_ai_provider_name="openai"' not in text


def test_client_chosen_label_values_are_bounded() -> None:
    """An unverified Proxy-Authorization user or a model name is the client's choice: past the limit, `other`."""
    from egressproxy import metrics as m
    from egressproxy.flowrecord import GenAiCall

    metrics = GatewayMetrics()
    sink = MetricsSink(metrics)
    sink.identities.limit, sink.models.limit = 3, 2
    for i in range(10):
        sink.request_finished(
            request(identity=Identity(f"ns{i}", "sa"), gen_ai=GenAiCall("openai", f"m{i}", 1, 1, reported=True))
        )
    text = generate_latest(metrics.registry).decode()
    namespaces = {line.split('namespace="')[1].split('"')[0] for line in text.splitlines() if line.startswith("egress_requests_total{")}
    assert namespaces == {"ns0", "ns1", "ns2", m.OVERFLOW}
    models = {line.split('gen_ai_request_model="')[1].split('"')[0] for line in text.splitlines() if line.startswith("gen_ai_client_token_usage_count{")}
    assert models == {"m0", "m1", m.OVERFLOW}
    long = m.BoundedValues(5).bound("x" * 1000)
    assert len(long) == m.MAX_LABEL_LENGTH


def test_an_unrouted_host_under_allow_all_adds_no_label_value() -> None:
    """Route and backend of a request no route matched are `none`, whatever host it went to."""
    metrics = GatewayMetrics()
    sink = MetricsSink(metrics)
    for i in range(5):
        sink.request_finished(request(route=None, backend=None, host=f"h{i}.example.test", url=f"http://h{i}.example.test/x{i}"))
    text = generate_latest(metrics.registry).decode()
    assert "example.test" not in text
    assert sample(metrics, "egress_requests_total", gateway="default/eg", listener="https", route="none", backend="none",
                  namespace="unknown", serviceaccount="unknown", decision="allow", status_class="2xx") == 5


def test_label_children_are_looked_up_once_per_label_set_and_never_mixed_up() -> None:
    """The sink keeps each label set's children (no `.labels()` per request): two routes, three requests each,
    interleaved, count apart, and only two sets of children are kept."""
    metrics = GatewayMetrics()
    sink = MetricsSink(metrics)
    for _ in range(3):
        sink.request_finished(request(route="default/a", duration=0.5))
        sink.request_finished(request(route="default/b", duration=0.25))
    for route, seconds in (("default/a", 1.5), ("default/b", 0.75)):
        labels = dict(gateway="default/eg", listener="https", route=route, backend="none", namespace="unknown",
                      serviceaccount="unknown", decision="allow", status_class="2xx")
        assert sample(metrics, "egress_requests_total", **labels) == 3
        assert sample(metrics, "egress_request_duration_seconds_sum", **labels) == seconds
    assert sample(metrics, "egress_worker_requests_total", worker="0") == 6
    assert len(sink.request_children) == 2
