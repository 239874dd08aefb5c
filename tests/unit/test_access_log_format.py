"""Envoy command operators compiled once into a format (egressproxy/access_log_format.py), evaluated per record."""

from __future__ import annotations

import json

import pytest

from egressproxy.access_log_format import (
    DEFAULT_JSON_FORMAT,
    REDACTED,
    FormatError,
    compile_json_format,
    compile_text_format,
    redact_path,
)
from egressproxy.flowrecord import Exchange, GenAiCall, Identity, Verdict
from tests.unit.test_sinks import request

EXCHANGE = Exchange(
    request_headers=(
        (b"Host", b"api.example.test"),
        (b"User-Agent", b"curl/8"),
        (b"Authorization", b"Bearer sk-client-secret"),
        (b"X-Custom-Key", b"injected-name-secret"),
        (b"X-Request-Id", b"r-1"),
    ),
    response_headers=((b"Content-Type", b"application/json"), (b"Set-Cookie", b"session=abc")),
    path="/v1/chat?key=query-secret&a=1",
    authority="api.example.test",
    scheme="https",
    protocol="HTTP/1.1",
    bytes_received=12,
    bytes_sent=345,
    client_address="127.0.0.1:5555",
    upstream_address="10.0.0.7:443",
    trace_id="0af7651916cd43dd8448eb211c80319c",
)


def rec(**overrides: object):  # type: ignore[no-untyped-def]
    values: dict[str, object] = dict(exchange=EXCHANGE, method="POST", identity=Identity("team-a", "agent"), started=1700000000.25)
    values.update(overrides)
    return request(**values)


def test_each_documented_operator_prints_its_value_and_numbers_stay_numbers() -> None:
    fmt = compile_json_format(
        {
            "start": "%START_TIME%",
            "epoch": "%START_TIME(%s)%",
            "method": "%REQ(:METHOD)%",
            "path": "%REQ(:PATH)%",
            "authority": "%REQ(:AUTHORITY)%",
            "ua": "%REQ(USER-AGENT)%",
            "alt": "%REQ(X-MISSING?X-REQUEST-ID)%",
            "cut": "%REQ(USER-AGENT):4%",
            "ctype": "%RESP(content-type)%",
            "code": "%RESPONSE_CODE%",
            "duration": "%DURATION%",
            "upstream": "%UPSTREAM_HOST%",
            "in": "%BYTES_RECEIVED%",
            "out": "%BYTES_SENT%",
            "protocol": "%PROTOCOL%",
            "flags": "%RESPONSE_FLAGS%",
            "client": "%DOWNSTREAM_REMOTE_ADDRESS%",
            "client_ip": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
            "trace": "%TRACE_ID%",
            "identity": "%EGRESS_IDENTITY%",
            "mixed": "%REQ(:METHOD)% took %DURATION%ms",
            "nested": {"route": "%ROUTE_NAME%", "missing": "%REQ(X-NOPE)%"},
            "literal": 7,
        }
    )
    out = json.loads(fmt.line(rec()))
    assert out == {
        "start": "2023-11-14T22:13:20.250Z",
        "epoch": "1700000000",
        "method": "POST",
        "path": f"/v1/chat?key={REDACTED}&a=1",
        "authority": "api.example.test",
        "ua": "curl/8",
        "alt": "r-1",
        "cut": "curl",
        "ctype": "application/json",
        "code": 200,
        "duration": 250,
        "upstream": "10.0.0.7:443",
        "in": 12,
        "out": 345,
        "protocol": "HTTP/1.1",
        "flags": "-",
        "client": "127.0.0.1:5555",
        "client_ip": "127.0.0.1",
        "trace": "0af7651916cd43dd8448eb211c80319c",
        "identity": "team-a/agent",
        "mixed": "POST took 250ms",
        "nested": {"route": "default/api", "missing": None},
        "literal": 7,
    }


def test_a_denial_prints_its_reason_policy_and_flags() -> None:
    verdict = Verdict.deny("rate-limited", "RateLimitPolicy/default/tokens", status_code=429)
    fmt = compile_json_format({**DEFAULT_JSON_FORMAT, "flags": "%RESPONSE_FLAGS%"})
    out = json.loads(fmt.line(rec(verdict=verdict, decision="deny", status=429)))
    assert (out["response_code"], out["decision"], out["response_code_details"], out["policy"], out["flags"]) == (
        429, "deny", "rate-limited", "RateLimitPolicy/default/tokens", "RL"
    )
    failed = json.loads(fmt.line(rec(error="upstream-timeout", decision="error", status=504)))
    assert (failed["response_code_details"], failed["flags"]) == ("upstream-timeout", "UT")


def test_credential_headers_print_redacted_whatever_the_format_asks() -> None:
    fmt = compile_json_format(
        {"auth": "%REQ(Authorization)%", "custom": "%REQ(x-custom-key)%", "cookie": "%RESP(set-cookie)%"},
        redacted=frozenset({"authorization", "set-cookie", "x-custom-key"}),
    )
    line = fmt.line(rec())
    assert json.loads(line) == {"auth": REDACTED, "custom": REDACTED, "cookie": REDACTED}
    for secret in ("sk-client-secret", "injected-name-secret", "session=abc"):
        assert secret not in line


def test_gen_ai_operators_print_the_reported_usage() -> None:
    fmt = compile_json_format({"p": "%GEN_AI_PROVIDER_NAME%", "m": "%GEN_AI_REQUEST_MODEL%",
                               "i": "%GEN_AI_USAGE_INPUT_TOKENS%", "o": "%GEN_AI_USAGE_OUTPUT_TOKENS%"})
    out = json.loads(fmt.line(rec(gen_ai=GenAiCall("openai", "gpt-x", 20, 10, reported=True))))
    assert out == {"p": "openai", "m": "gpt-x", "i": 20, "o": 10}


def test_a_text_format_prints_dashes_for_missing_values() -> None:
    fmt = compile_text_format("%REQ(:METHOD)% %REQ(X-NOPE)% %RESPONSE_CODE% %UPSTREAM_HOST%\n")
    assert fmt.line(rec(exchange=Exchange(), status=None)) == "POST - 0 -"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"a": "%NOT_AN_OPERATOR%"}, "a: unknown command operator %NOT_AN_OPERATOR%"),
        ({"n": {"b": "%REQ()%"}}, "n.b: %REQ()% needs one header name"),
        ({"c": "%DURATION(x)%"}, "c: %DURATION% takes no argument"),
        ({"d": "%lowercase%"}, None),  # not an operator: literal text, as Envoy prints it
        ({"e": ["%DURATION%"]}, "e: a value must be a string"),
    ],
)
def test_an_unknown_or_malformed_operator_is_an_error_naming_the_field(spec: dict, message: str | None) -> None:
    if message is None:
        assert json.loads(compile_json_format(spec).line(rec())) == {"d": "%lowercase%"}
        return
    with pytest.raises(FormatError) as error:
        compile_json_format(spec)
    assert str(error.value).startswith(message)


def test_query_credentials_are_redacted_in_a_path() -> None:
    assert redact_path("/x?key=s&b=2&KEY=t", frozenset({"key"})) == f"/x?key={REDACTED}&b=2&KEY={REDACTED}"
    assert redact_path("/x", frozenset({"key"})) == "/x"
