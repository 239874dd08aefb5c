"""candidate_formats: which failover candidates get a translated request, which are skipped and why; and the
whole-answer translation back to the client's format."""

from __future__ import annotations

import json

import pytest

from egressproxy.ai_formats import ApiFormat, MalformedPayload
from egressproxy.cross_format import Translation, answer_headers, candidate_formats, skip_reason, translate_answer
from egressproxy.snapshot import AIProvider
from egressproxy.upstreams import Upstream

GPT = Upstream("api.openai.com", 443, provider=AIProvider("gpt", "openai", model="gpt-4o-mini", config={"model": "gpt-4o-mini"}))
CLAUDE = Upstream("api.anthropic.com", 443, provider=AIProvider("claude", "anthropic", model="claude-x", config={"model": "claude-x"}))
BARE_CLAUDE = Upstream("api.anthropic.com", 443, provider=AIProvider("bare", "anthropic"))
GEMINI = Upstream("generativelanguage.googleapis.com", 443, provider=AIProvider("gemini", "gemini", model="g"))
SECRET_PROMPT = "my-SECRET-prompt"
OPENAI_BODY = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": SECRET_PROMPT}]}).encode()
ANTHROPIC_BODY = json.dumps({"model": "claude-asked", "max_tokens": 10,
                             "messages": [{"role": "user", "content": SECRET_PROMPT}]}).encode()


def test_a_candidate_of_the_clients_format_is_left_alone_and_the_other_format_is_translated() -> None:
    formats = candidate_formats("/v1/chat/completions", OPENAI_BODY, None, (GPT, CLAUDE))
    assert GPT not in formats
    translation = formats[CLAUDE]
    assert isinstance(translation, Translation)
    assert (translation.client, translation.provider) == (ApiFormat.OPENAI_CHAT, ApiFormat.ANTHROPIC_MESSAGES)
    assert translation.path == "/v1/messages" and translation.reported_model == "gpt-4o"
    body = json.loads(translation.body)
    assert body["model"] == "claude-x" and body["max_tokens"] == 4096


def test_an_anthropic_client_gets_openai_candidates_translated_with_their_path_override() -> None:
    local = Upstream("127.0.0.1", 8000, "http", provider=AIProvider("local", "openai", path="/api/chat", config={"model": "llama"}))
    translation = candidate_formats("/v1/messages?beta=true", ANTHROPIC_BODY, None, (CLAUDE, local))[local]
    assert isinstance(translation, Translation) and translation.path == "/api/chat"
    assert json.loads(translation.body)["model"] == "llama" and translation.reported_model == "claude-asked"


@pytest.mark.parametrize(
    ("body", "encoding", "candidate", "expected"),
    [
        (json.dumps({"model": "m", "n": 2, "messages": [{"role": "user", "content": SECRET_PROMPT}]}).encode(), None,
         CLAUDE, "cannot be translated to the anthropic API: n"),
        (OPENAI_BODY, None, BARE_CLAUDE, "sets no model"),
        (OPENAI_BODY, "gzip", CLAUDE, "compressed (gzip)"),
        (b"not json", None, CLAUDE, "not a JSON object"),
        (OPENAI_BODY, None, GEMINI, "OpenAI and Anthropic chat APIs only"),
    ],
)
def test_what_cannot_be_translated_is_skipped_with_a_reason_that_quotes_no_value(
    body: bytes, encoding: str | None, candidate: Upstream, expected: str
) -> None:
    formats = candidate_formats("/v1/chat/completions", body, encoding, (GPT, candidate))
    reason = skip_reason(formats, candidate)
    assert reason is not None and expected in reason
    assert SECRET_PROMPT not in reason
    assert skip_reason(formats, GPT) is None


def test_a_request_of_no_known_format_skips_candidates_of_another_format_than_the_first() -> None:
    formats = candidate_formats("/v1/embeddings", b'{"input": "x"}', None, (GPT, CLAUDE))
    assert GPT not in formats and "not a chat request" in str(skip_reason(formats, CLAUDE))


def test_answers_come_back_in_the_clients_format() -> None:
    translation = candidate_formats("/v1/chat/completions", OPENAI_BODY, None, (GPT, CLAUDE))[CLAUDE]
    assert isinstance(translation, Translation)
    message = {"id": "m1", "type": "message", "role": "assistant", "model": "claude-x", "stop_reason": "end_turn",
               "content": [{"type": "text", "text": "hello"}], "usage": {"input_tokens": 1, "output_tokens": 2}}
    completion = json.loads(translate_answer(translation, 200, json.dumps(message).encode()))
    assert completion["choices"][0]["message"]["content"] == "hello" and completion["model"] == "gpt-4o"
    error = json.loads(translate_answer(translation, 529, b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}'))
    assert error["error"]["message"] == "busy"
    with pytest.raises(MalformedPayload):
        translate_answer(translation, 200, b"[]")
    headers = answer_headers([("content-length", "9"), ("request-id", "r"), ("content-type", "application/json")], "text/event-stream")
    assert headers == [("request-id", "r"), ("content-type", "text/event-stream")]
