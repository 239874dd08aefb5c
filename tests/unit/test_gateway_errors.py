"""The gateway-errors addon answers a failed request from the typed outcome on its records, in this order: the
flow's own failure (upstream TLS), the dial it waited for (denial or failure), and only then mitmproxy's text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mitmproxy.test import tflow

from addons.gateway_errors import GatewayErrors
from egressproxy.engine.answers import flow_record
from egressproxy.engine.mitmproxy_boundary import RESPONSE_FAILURE_KEY
from egressproxy.flowrecord import Verdict
from egressproxy.outcomes import GatewayFailure
from egressproxy.runtime.state import GatewayState

HOST = "ssl-tls-certificate.example"


@pytest.fixture
def addon(tmp_path: Path) -> GatewayErrors:
    return GatewayErrors(GatewayState(tmp_path))


def flow_to(addon: GatewayErrors, host: str = HOST, port: int = 443):  # type: ignore[no-untyped-def]
    flow = tflow.tflow()
    flow.request.host, flow.request.port = host, port
    addon.state.connection(flow.client_conn.id)
    return flow


def counted(addon: GatewayErrors, reason: str) -> float:
    value = addon.state.metrics.registry.get_sample_value("egress_upstream_errors_total", {"reason": reason})
    return value or 0.0


def body(response) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(response.content)


def test_a_dial_failure_is_answered_as_recorded_whatever_the_words(addon: GatewayErrors) -> None:
    flow = flow_to(addon)
    failure = GatewayFailure("upstream-unreachable", f"connecting to {HOST}:443 (127.0.0.1) failed: refused")
    addon.state.connection(flow.client_conn.id).dial_outcomes[(HOST, 443)] = failure
    response = addon.answer(flow, f"Certificate verify failed for {HOST}")
    assert response is not None and response.status_code == 502
    assert response.headers["x-egress-error"] == "upstream-unreachable"
    assert body(response)["error"] == f"upstream unreachable: connecting to {HOST}:443 (127.0.0.1) failed: refused"
    assert counted(addon, "upstream-unreachable") == 0  # the dial guard counted it when it happened
    assert flow_record(flow).error == "upstream-unreachable"


def test_a_refused_dial_is_the_guards_denial(addon: GatewayErrors) -> None:
    flow = flow_to(addon, "metadata.test", 80)
    verdict = Verdict.deny("destination-address-denied", "EgressGateway/default/eg", "169.254.169.254 is link-local")
    addon.state.connection(flow.client_conn.id).dial_outcomes[("metadata.test", 80)] = verdict
    response = addon.answer(flow, "egress: upstream-unreachable: not what happened")
    assert response is not None and response.status_code == 403
    assert response.headers["x-egress-denied"] == "destination-address-denied"
    assert body(response) == {
        "error": "169.254.169.254 is link-local",
        "reason": "destination-address-denied",
        "policy": "EgressGateway/default/eg",
    }


def test_the_flows_tls_failure_comes_first_and_is_counted_with_its_cause(addon: GatewayErrors) -> None:
    flow = flow_to(addon)
    flow_record(flow).failure = GatewayFailure("upstream-tls-invalid", "SPKI pin mismatch: ...", "BackendTLSPolicy/ns/p")
    response = addon.answer(flow, "server closed connection")
    assert response is not None and response.status_code == 502
    assert response.headers["x-egress-error"] == "upstream-tls-invalid"
    assert body(response)["error"] == "upstream TLS is invalid: SPKI pin mismatch: ..."
    assert counted(addon, "upstream-tls-invalid") == 1
    tls = addon.state.metrics.registry.get_sample_value("egress_upstream_tls_failures_total", {"cause": "pin-mismatch"})
    assert tls == 1


@pytest.mark.parametrize(
    ("message", "reason", "status"),
    [
        ("[Errno 111] Connection refused", "upstream-unreachable", 502),
        ("Certificate verify failed: certificate has expired", "upstream-tls-invalid", 502),
        ("[Errno 110] Connection timed out", "upstream-timeout", 504),
    ],
)
def test_without_a_record_mitmproxys_message_is_classified_and_counted(
    addon: GatewayErrors, message: str, reason: str, status: int
) -> None:
    response = addon.answer(flow_to(addon), message)
    assert response is not None and response.status_code == status
    assert response.headers["x-egress-error"] == reason
    assert counted(addon, reason) == 1


def test_a_stale_outcome_for_another_destination_does_not_apply(addon: GatewayErrors) -> None:
    flow = flow_to(addon)
    addon.state.connection(flow.client_conn.id).dial_outcomes[("other.test", 443)] = GatewayFailure("upstream-timeout", "x")
    response = addon.answer(flow, "[Errno 111] Connection refused")
    assert response is not None and response.headers["x-egress-error"] == "upstream-unreachable"


# --- responses that break after their headers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("HTTP/1 protocol error: peer closed connection without sending complete message body", "upstream-reset"),
        ("server closed connection", "upstream-reset"),
        ("HTTP/1 protocol error: illegal chunk header: bytearray(b'zz-not-hex')", "upstream-protocol-error"),
    ],
)
def test_a_response_broken_after_its_headers_is_counted_and_marked(addon: GatewayErrors, message: str, reason: str) -> None:
    flow = flow_to(addon)
    flow.metadata[RESPONSE_FAILURE_KEY] = message
    addon.error(flow)
    assert flow_record(flow).error == reason
    assert counted(addon, reason) == 1


def test_an_error_without_an_upstream_failure_after_the_headers_is_left_alone(addon: GatewayErrors) -> None:
    """A client that went away mid-response (no note from the boundary) is not the upstream's fault."""
    flow = flow_to(addon)
    addon.error(flow)
    assert flow_record(flow).error is None
    assert counted(addon, "upstream-reset") == 0


def test_a_reason_already_decided_wins(addon: GatewayErrors) -> None:
    """The request timeout cut a stalled body (and closed the upstream, which mitmproxy then reports)."""
    flow = flow_to(addon)
    flow_record(flow).error = "upstream-timeout"
    flow.metadata[RESPONSE_FAILURE_KEY] = "server closed connection"
    addon.error(flow)
    assert flow_record(flow).error == "upstream-timeout"
    assert counted(addon, "upstream-reset") == 0
