"""Non-streamed responses and error bodies both ways (egressproxy/ai_formats/responses.py, error_bodies.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from egressproxy.ai_formats import (
    REFUSAL_STATUS,
    ApiFormat,
    MalformedPayload,
    Untranslatable,
    refusal_body,
    translate_error,
    translate_response,
)
from egressproxy.ai_formats.error_bodies import to_anthropic_error, to_openai_error
from egressproxy.ai_formats.responses import to_anthropic_response, to_openai_response
from tests.unit.ai_format_fixtures import ANTHROPIC_TOOL_RESPONSE, OPENAI_TOOL_RESPONSE


def test_openai_response_to_anthropic() -> None:
    """Text then tool_use blocks, the finish reason, usage; the model is the one the client asked for."""
    assert to_anthropic_response(OPENAI_TOOL_RESPONSE, "claude-asked") == {
        "id": "msg_B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "type": "message", "role": "assistant", "model": "claude-asked",
        "content": [
            {"type": "text", "text": "I'll look that up."},
            {"type": "tool_use", "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "name": "get_weather",
             "input": {"location": "Boston, MA"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 82, "output_tokens": 17},
    }


def test_anthropic_response_to_openai() -> None:
    assert to_openai_response(ANTHROPIC_TOOL_RESPONSE, "gpt-asked", created=1741570283) == {
        "id": "chatcmpl-01Aq9w938a90dw8q", "object": "chat.completion", "created": 1741570283, "model": "gpt-asked",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "I'll look that up.", "refusal": None,
            "tool_calls": [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"location":"San Francisco, CA","unit":"celsius"}'}}],
        }}],
        "usage": {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598},
    }


def test_round_trips() -> None:
    """Anthropic -> OpenAI -> Anthropic is lossless for text, tool use, stop reason, usage and id."""
    back = to_anthropic_response(to_openai_response(ANTHROPIC_TOOL_RESPONSE, "x"), "claude-sonnet-4-5")
    assert back == ANTHROPIC_TOOL_RESPONSE
    again = to_openai_response(to_anthropic_response(OPENAI_TOOL_RESPONSE, "x"), "gpt-4o-2024-08-06",
                               created=OPENAI_TOOL_RESPONSE["created"])
    assert again["id"] == OPENAI_TOOL_RESPONSE["id"]
    assert again["choices"][0]["finish_reason"] == "tool_calls"
    assert again["choices"][0]["message"]["content"] == "I'll look that up."
    assert again["usage"] == {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}


@pytest.mark.parametrize(("finish", "stop"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal"),
])
def test_finish_reasons_map_both_ways(finish: str, stop: str) -> None:
    openai = {"id": "c", "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"},
                                      "finish_reason": finish}]}
    assert to_anthropic_response(openai, "m")["stop_reason"] == stop
    anthropic = {"id": "m", "content": [{"type": "text", "text": "x"}], "stop_reason": stop}
    assert to_openai_response(anthropic, "m")["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize(("stop", "finish"), [
    ("stop_sequence", "stop"), ("pause_turn", "stop"), ("model_context_window_exceeded", "length"),
    ("something_new", "stop"),
])
def test_anthropic_only_stop_reasons(stop: str, finish: str) -> None:
    anthropic = {"id": "m", "content": [], "stop_reason": stop}
    assert to_openai_response(anthropic, "m")["choices"][0]["finish_reason"] == finish


def test_cache_tokens_count_as_prompt_tokens_and_thinking_is_dropped() -> None:
    anthropic = {"id": "msg_1", "content": [{"type": "thinking", "thinking": "...", "signature": "s"},
                                            {"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                 "stop_reason": "end_turn",
                 "usage": {"input_tokens": 5, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 50,
                           "output_tokens": 3}}
    out = to_openai_response(anthropic, "m")
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "ab", "refusal": None}
    assert out["usage"] == {"prompt_tokens": 155, "completion_tokens": 3, "total_tokens": 158}


def test_an_openai_refusal_is_text_with_stop_reason_refusal() -> None:
    openai = {"id": "c", "choices": [{"index": 0, "finish_reason": "content_filter",
                                      "message": {"role": "assistant", "content": None, "refusal": "I can't."}}]}
    out = to_anthropic_response(openai, "m")
    assert out["content"] == [{"type": "text", "text": "I can't."}] and out["stop_reason"] == "refusal"


@pytest.mark.parametrize(("translate", "body"), [
    (to_anthropic_response, {"choices": []}),
    (to_anthropic_response, {"choices": [{"message": None}]}),
    (to_anthropic_response, {"choices": [{"message": {"tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "{not json"}}]}}]}),
    (to_openai_response, {"content": "text"}),
])
def test_malformed_responses(translate: Any, body: dict[str, Any]) -> None:
    with pytest.raises(MalformedPayload):
        translate(body, "m")


def test_translate_response_dispatches() -> None:
    assert translate_response(OPENAI_TOOL_RESPONSE, ApiFormat.OPENAI_CHAT, ApiFormat.OPENAI_CHAT, "m") == \
        OPENAI_TOOL_RESPONSE
    assert translate_response(OPENAI_TOOL_RESPONSE, ApiFormat.OPENAI_CHAT, ApiFormat.ANTHROPIC_MESSAGES, "m") == \
        to_anthropic_response(OPENAI_TOOL_RESPONSE, "m")
    assert translate_response(ANTHROPIC_TOOL_RESPONSE, ApiFormat.ANTHROPIC_MESSAGES, ApiFormat.OPENAI_CHAT,
                              "m")["choices"][0]["finish_reason"] == "tool_calls"


# --- errors ---------------------------------------------------------------------------------------------------


OPENAI_RATE_LIMIT = {"error": {"message": "Rate limit reached for gpt-4o in organization org-x on tokens per min.",
                               "type": "tokens", "param": None, "code": "rate_limit_exceeded"}}
ANTHROPIC_OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
                        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


@pytest.mark.parametrize(("status", "openai_type", "anthropic_type"), [
    (400, "invalid_request_error", "invalid_request_error"),
    (401, "invalid_request_error", "authentication_error"),
    (403, "invalid_request_error", "permission_error"),
    (404, "invalid_request_error", "not_found_error"),
    (429, "insufficient_quota", "rate_limit_error"),
    (500, "server_error", "api_error"),
    (503, "server_error", "overloaded_error"),
    (None, "tokens", "rate_limit_error"),
    (None, "server_error", "api_error"),
    (None, "mystery", "api_error"),
    (418, "mystery", "invalid_request_error"),
])
def test_openai_errors_to_anthropic(status: int | None, openai_type: str, anthropic_type: str) -> None:
    body = {"error": {"message": "m", "type": openai_type, "param": None, "code": None}}
    assert to_anthropic_error(body, status) == {"type": "error", "error": {"type": anthropic_type, "message": "m"}}


@pytest.mark.parametrize(("anthropic_type", "openai_type"), [
    ("invalid_request_error", "invalid_request_error"), ("authentication_error", "authentication_error"),
    ("permission_error", "permission_error"), ("not_found_error", "not_found_error"),
    ("request_too_large", "invalid_request_error"), ("rate_limit_error", "rate_limit_exceeded"),
    ("api_error", "server_error"), ("overloaded_error", "server_error"), ("new_error", "server_error"),
])
def test_anthropic_errors_to_openai(anthropic_type: str, openai_type: str) -> None:
    body = {"type": "error", "error": {"type": anthropic_type, "message": "m"}}
    assert to_openai_error(body, 400) == {"error": {"message": "m", "type": openai_type, "param": None,
                                                    "code": anthropic_type}}


def test_translate_error_keeps_the_message_and_shape() -> None:
    out = json.loads(translate_error(json.dumps(OPENAI_RATE_LIMIT).encode(), 429, ApiFormat.ANTHROPIC_MESSAGES))
    assert out == {"type": "error", "error": {"type": "rate_limit_error",
                                              "message": OPENAI_RATE_LIMIT["error"]["message"]}}
    out = json.loads(translate_error(json.dumps(ANTHROPIC_OVERLOADED).encode(), 529, ApiFormat.OPENAI_CHAT))
    assert out == {"error": {"message": "Overloaded", "type": "server_error", "param": None,
                             "code": "overloaded_error"}}


def test_a_body_that_is_no_error_json_is_never_quoted() -> None:
    """An HTML error page (which might echo a header) becomes a message naming only the status."""
    page = b"<html>502 Bad Gateway; x-api-key: sk-ant-secret</html>"
    for target in ApiFormat:
        out = translate_error(page, 502, target)
        assert b"sk-ant-secret" not in out
        assert "status 502" in json.dumps(json.loads(out))


def test_refusal_body_in_the_clients_format() -> None:
    error = Untranslatable("n", "Anthropic returns one choice per request; n > 1 cannot be translated")
    assert REFUSAL_STATUS == 400
    openai = json.loads(refusal_body(error, ApiFormat.OPENAI_CHAT))
    assert openai["error"]["type"] == "invalid_request_error" and openai["error"]["param"] == "n"
    assert openai["error"]["code"] == "untranslatable_request"
    assert "n: Anthropic returns one choice" in openai["error"]["message"]
    anthropic = json.loads(refusal_body(error, ApiFormat.ANTHROPIC_MESSAGES))
    assert anthropic["type"] == "error" and anthropic["error"]["type"] == "invalid_request_error"
