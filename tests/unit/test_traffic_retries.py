"""TrafficPolicy retry/retries and timeouts: compiled forms, retryOn over retryable()'s reasons, precedence."""

from __future__ import annotations

import pytest

from egressproxy.retryability import Phase, retryable
from egressproxy.traffic_retries import DEFAULT_RETRY_ON, RetryPolicy, TrafficSettings, compile_traffic_settings, merge_settings


def _policy(spec: dict[str, object]) -> RetryPolicy:
    settings = compile_traffic_settings("TrafficPolicy/default/tp", spec)
    assert settings is not None and settings.retry is not None
    return settings.retry


def test_kgateway_spelling() -> None:
    retry = _policy({"retry": {"attempts": 3, "retryOn": ["gateway-error"], "perTryTimeout": 2.0, "backoffBaseInterval": 0.1,
                               "statusCodes": [409]}})
    assert (retry.attempts, retry.per_try_timeout, retry.backoff, retry.max_backoff) == (3, 2.0, 0.1, pytest.approx(1.0))
    assert retry.retry_on == {"gateway-error", "retriable-status-codes"} and retry.explicit
    assert retry.status_codes == {409}


def test_seeds_spelling_with_a_comma_separated_retry_on() -> None:
    retry = _policy({"retries": {"attempts": 2, "retryOn": "connect-failure, 5xx", "backOff": {"baseInterval": 0.2, "maxInterval": 0.5}}})
    assert retry.retry_on == {"connect-failure", "5xx"} and retry.explicit
    assert (retry.backoff, retry.max_backoff) == (0.2, 0.5)


def test_defaults() -> None:
    retry = _policy({"retry": {}})
    assert retry.attempts == 1 and retry.retry_on == DEFAULT_RETRY_ON and not retry.explicit


@pytest.mark.parametrize(("method", "explicit", "applies"), [
    ("GET", False, True), ("HEAD", False, True), ("PUT", False, True), ("DELETE", False, True),
    ("POST", False, False), ("PATCH", False, False), ("POST", True, True),
])
def test_only_idempotent_methods_unless_retry_on_is_set(method: str, explicit: bool, applies: bool) -> None:
    spec = {"retry": {"retryOn": ["5xx"]}} if explicit else {"retry": {}}
    assert _policy(spec).applies_to(method) is applies


def test_zero_attempts_retries_nothing() -> None:
    assert not _policy({"retry": {"attempts": 0}}).applies_to("GET")


def _allows(retry_on: list[str], status: int | None, phase: Phase = Phase.RESPONSE, headers: dict[str, str] | None = None,
            codes: list[int] | None = None) -> bool:
    spec: dict[str, object] = {"retryOn": retry_on}
    if codes:
        spec["statusCodes"] = codes
    retry = _policy({"retry": spec})
    h = headers or {}
    return retry.allows(retryable(status, b"", h, phase), status, h)


@pytest.mark.parametrize(("retry_on", "status", "phase", "expected"), [
    (["5xx"], 500, Phase.RESPONSE, True),
    (["5xx"], 404, Phase.RESPONSE, False),
    (["5xx"], None, Phase.CONNECT, True),
    (["5xx"], None, Phase.HEAD, True),
    (["gateway-error"], 500, Phase.RESPONSE, False),
    (["gateway-error"], 503, Phase.RESPONSE, True),
    (["connect-failure"], None, Phase.CONNECT, True),
    (["connect-failure"], None, Phase.TLS, True),
    (["connect-failure"], None, Phase.HEAD, False),
    (["connect-failure"], 503, Phase.RESPONSE, False),
    (["reset"], None, Phase.HEAD, True),
    (["reset"], None, Phase.CONNECT, False),
    (["retriable-4xx"], 409, Phase.RESPONSE, True),
    (["retriable-4xx"], 400, Phase.RESPONSE, False),
    (["envoy-ratelimited"], 429, Phase.RESPONSE, True),
    (["5xx"], 429, Phase.RESPONSE, False),
])
def test_retry_on_conditions(retry_on: list[str], status: int | None, phase: Phase, expected: bool) -> None:
    assert _allows(retry_on, status, phase) is expected


def test_status_codes_and_grpc_statuses() -> None:
    assert _allows(["retriable-status-codes"], 404, codes=[404])
    assert not _allows(["retriable-status-codes"], 405, codes=[404])
    assert _allows(["unavailable"], 200, headers={"grpc-status": "14"})
    assert not _allows(["unavailable"], 200, headers={"grpc-status": "13"})
    assert _allows(["internal"], 200, headers={"grpc-status": "13"})


def test_timeouts_in_both_spellings_and_precedence() -> None:
    assert compile_traffic_settings("x", {"timeouts": {"request": 10.0}}) == TrafficSettings(None, 10.0)
    assert compile_traffic_settings("x", {"timeout": {"request": 5.0}}) == TrafficSettings(None, 5.0)
    assert compile_traffic_settings("x", {"cors": {}}) is None
    rule_level = TrafficSettings(None, 3.0)
    route_level = TrafficSettings(_policy({"retry": {}}), 9.0)
    merged = merge_settings([rule_level, route_level])
    assert merged.request_timeout == 3.0 and merged.retry == route_level.retry


def test_gateway_api_route_retry() -> None:
    from egressproxy.traffic_retries import compile_route_retry

    retry = compile_route_retry("HTTPRoute/default/r rules[0].retry", {"codes": [500, 502], "attempts": 2, "backoff": 0.1})
    assert retry is not None and (retry.attempts, retry.backoff) == (2, 0.1)
    assert retry.applies_to("GET") and not retry.applies_to("POST")
    assert retry.allows(retryable(502, b"", {}, Phase.RESPONSE), 502, {})
    assert not retry.allows(retryable(503, b"", {}, Phase.RESPONSE), 503, {})  # only the listed codes
    assert retry.allows(retryable(None, b"", {}, Phase.CONNECT), None, {})  # and connection failures
    assert compile_route_retry("x", None) is None
