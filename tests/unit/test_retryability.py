"""retryable(): one decision for replay and cooldown; the cooldown headers of each provider."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from egressproxy.retryability import (
    COOLDOWN_CAP,
    DEFAULT_COOLDOWN,
    Phase,
    cooldown_from_headers,
    is_quota_exhausted,
    parse_reset_duration,
    retryable,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("phase", "reason"),
    [(Phase.CONNECT, "connect-failure"), (Phase.TLS, "tls-failure"), (Phase.HEAD, "timeout")],
)
def test_failures_before_a_response_go_on_and_cool_down_the_default(phase: Phase, reason: str) -> None:
    result = retryable(None, b"", {}, phase)
    assert (result.retry, result.cooldown, result.reason) == (True, DEFAULT_COOLDOWN, reason)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 529])
def test_5xx_goes_on(status: int) -> None:
    result = retryable(status, b"", {}, Phase.RESPONSE, NOW)
    assert (result.retry, result.cooldown, result.reason) == (True, DEFAULT_COOLDOWN, "server-error")


def test_a_5xx_with_retry_after_cools_down_for_it() -> None:
    assert retryable(503, b"", {"retry-after": "12"}, Phase.RESPONSE, NOW).cooldown == 12.0


@pytest.mark.parametrize("status", [200, 201, 301, 400, 401, 403, 404, 408, 413, 422])
def test_other_statuses_are_kept(status: int) -> None:
    result = retryable(status, b"insufficient_quota", {"retry-after": "3"}, Phase.RESPONSE, NOW)
    assert (result.retry, result.cooldown, result.reason) == (False, 0.0, "not-retryable")


def test_nothing_goes_on_once_a_byte_reached_the_client() -> None:
    result = retryable(503, b"", {"retry-after": "3"}, Phase.STREAMING, NOW)
    assert (result.retry, result.cooldown, result.reason) == (False, 0.0, "mid-stream")


def test_a_transient_429_cools_down_for_its_retry_after() -> None:
    result = retryable(429, b'{"error": {"type": "rate_limit_error"}}', {"retry-after": "7"}, Phase.RESPONSE, NOW)
    assert (result.retry, result.cooldown, result.reason) == (True, 7.0, "rate-limited")


def test_a_429_without_headers_cools_down_5s() -> None:
    assert retryable(429, b"", {}, Phase.RESPONSE, NOW).cooldown == DEFAULT_COOLDOWN


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"error": {"code": "insufficient_quota", "type": "insufficient_quota"}}', {}),
        (b'{"error": {}}', {"x-should-retry": "false"}),
    ],
)
def test_a_quota_exhausted_429_goes_on_and_cools_down_for_the_cap(body: bytes, headers: dict[str, str]) -> None:
    assert is_quota_exhausted(body, headers)
    result = retryable(429, body, {**headers, "retry-after": "1"}, Phase.RESPONSE, NOW)
    assert (result.retry, result.cooldown, result.reason) == (True, COOLDOWN_CAP, "quota-exhausted")


def test_x_should_retry_true_is_not_quota() -> None:
    assert not is_quota_exhausted(b"{}", {"x-should-retry": "true"})


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the millisecond header first
        ({"retry-after": "30"}, 30.0),
        ({"retry-after": format_datetime(datetime.fromtimestamp(NOW + 40, timezone.utc), usegmt=True)}, 40.0),
        ({"retry-after": "3600"}, COOLDOWN_CAP),  # capped at 5m
        ({"retry-after": "-3"}, 0.0),
        ({"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-remaining-requests": "0"}, COOLDOWN_CAP),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "20ms"}, 1.0),  # the longest
        # The tokens limit still has room: only the exhausted requests limit counts.
        ({"x-ratelimit-reset-requests": "2s", "x-ratelimit-remaining-requests": "0",
          "x-ratelimit-reset-tokens": "50s", "x-ratelimit-remaining-tokens": "900"}, 2.0),
        ({"anthropic-ratelimit-requests-reset": (datetime.fromtimestamp(NOW + 20, timezone.utc)).isoformat().replace("+00:00", "Z"),
          "anthropic-ratelimit-requests-remaining": "0"}, 20.0),
        ({"anthropic-ratelimit-tokens-reset": datetime.fromtimestamp(NOW + 8, timezone.utc).isoformat(),
          "anthropic-ratelimit-input-tokens-reset": datetime.fromtimestamp(NOW + 3, timezone.utc).isoformat()}, 8.0),
    ],
)
def test_cooldown_headers(headers: dict[str, str], seconds: float) -> None:
    assert cooldown_from_headers(headers, NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "headers",
    [{}, {"retry-after": "soon"}, {"retry-after-ms": "x"}, {"x-ratelimit-reset-requests": "later"},
     {"anthropic-ratelimit-requests-reset": "not a date"}],
)
def test_no_usable_header_is_none(headers: dict[str, str]) -> None:
    assert cooldown_from_headers(headers, NOW) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6m0s", 360.0), ("1s", 1.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0s", 0.0), ("", None), ("5", None), ("1x", None), ("s1", None)],
)
def test_openai_reset_durations(text: str, seconds: float | None) -> None:
    assert parse_reset_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_an_http_date_in_the_past_is_no_wait() -> None:
    past = format_datetime(datetime.fromtimestamp(NOW, timezone.utc) - timedelta(minutes=1), usegmt=True)
    assert cooldown_from_headers({"retry-after": past}, NOW) == 0.0


def test_a_refusal_of_the_gateways_own_goes_on_without_cooling_the_provider() -> None:
    result = retryable(None, b"", {}, Phase.REFUSED)
    assert (result.retry, result.cooldown, result.reason) == (True, 0.0, "refused")
