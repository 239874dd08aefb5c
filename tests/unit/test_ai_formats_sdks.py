"""The official SDKs accept what the translation writes (egressproxy/ai_formats/): each SDK is the client, an
in-memory transport plays a gateway that translates its request for a provider of the other format and the
provider's recorded answer back. The SDKs' own models and stream accumulators are the judges."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from egressproxy.ai_formats import (
    ApiFormat,
    detect_format,
    stream_translator,
    translate_error,
    translate_request,
    translate_response,
)
from tests.unit.ai_format_fixtures import (
    ANTHROPIC_TOOL_RESPONSE,
    ANTHROPIC_TOOL_STREAM,
    OPENAI_TOOL_RESPONSE,
    OPENAI_TOOL_STREAM,
)

WEATHER = {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}


class Gateway:
    """Translates each request for a provider of the other format, answers with `answer`, translates back."""

    def __init__(self, status: int = 200, answer: bytes | dict[str, Any] = b"", cut_after: int | None = None):
        self.status, self.answer, self.cut_after = status, answer, cut_after
        self.sent: dict[str, Any] = {}

    def handle(self, request: Any) -> Any:
        """One exchange; `request` is httpx's or httpx2's (the Anthropic SDK brings its own fork), and the
        response is built with the same package."""
        http = httpx2 if isinstance(request, httpx2.Request) else httpx
        body = json.loads(request.content)
        client = detect_format(request.url.path, body)
        assert client is not None
        provider = ApiFormat.OPENAI_CHAT if client is ApiFormat.ANTHROPIC_MESSAGES else ApiFormat.ANTHROPIC_MESSAGES
        translated = translate_request(body, client, provider, "provider-model")
        self.sent = translated.body
        if self.status != 200:
            answer = json.dumps(self.answer).encode()
            return http.Response(self.status, content=translate_error(answer, self.status, client))
        if isinstance(self.answer, dict):
            return http.Response(200, json=translate_response(self.answer, provider, client, body["model"]))
        stream = stream_translator(provider, client, body["model"], translated.include_usage)
        raw = self.answer if self.cut_after is None else self.answer[: self.cut_after]
        out = stream.feed(raw) + stream.end()
        if stream.outcome == "cut":
            out += stream.cut_event()
        return http.Response(200, content=out, headers={"content-type": "text/event-stream"})


def anthropic_client(gateway: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="dummy", base_url="http://gateway.test", max_retries=0,
                               http_client=httpx2.Client(transport=httpx2.MockTransport(gateway.handle)))


def openai_client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key="dummy", base_url="http://gateway.test/v1", max_retries=0,
                         http_client=httpx.Client(transport=httpx.MockTransport(gateway.handle)))


ASK_ANTHROPIC: dict[str, Any] = {
    "model": "claude-asked", "max_tokens": 256, "system": "Be brief.",
    "messages": [{"role": "user", "content": "Weather in Boston?"}],
    "tools": [{"name": "get_weather", "description": "Weather of a city", "input_schema": WEATHER}],
}
ASK_OPENAI: dict[str, Any] = {
    "model": "gpt-asked",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Zürich?"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}],
}


def test_anthropic_sdk_gets_a_message_from_an_openai_provider() -> None:
    gateway = Gateway(answer=OPENAI_TOOL_RESPONSE)
    message = anthropic_client(gateway).messages.create(**ASK_ANTHROPIC)
    assert gateway.sent["model"] == "provider-model" and gateway.sent["messages"][0]["role"] == "system"
    assert message.model == "claude-asked" and message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["text", "tool_use"]
    tool_use = message.content[1]
    assert isinstance(tool_use, anthropic.types.ToolUseBlock) and tool_use.input == {"location": "Boston, MA"}
    assert (message.usage.input_tokens, message.usage.output_tokens) == (82, 17)


def test_openai_sdk_gets_a_completion_from_an_anthropic_provider() -> None:
    gateway = Gateway(answer=ANTHROPIC_TOOL_RESPONSE)
    completion = openai_client(gateway).chat.completions.create(**ASK_OPENAI)
    assert gateway.sent["max_tokens"] == 4096 and gateway.sent["system"] == "Be brief."
    choice = completion.choices[0]
    assert completion.model == "gpt-asked" and choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll look that up."
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"location": "San Francisco, CA", "unit": "celsius"}  # type: ignore[union-attr]
    assert completion.usage is not None and completion.usage.total_tokens == 2598


def test_anthropic_sdk_streams_from_an_openai_provider() -> None:
    """The SDK's MessageStream accumulator checks the event grammar (block indices, deltas) as it goes."""
    gateway = Gateway(answer=OPENAI_TOOL_STREAM)
    with anthropic_client(gateway).messages.stream(**ASK_ANTHROPIC) as stream:
        texts = list(stream.text_stream)
        message = stream.get_final_message()
    assert gateway.sent["stream"] is True and gateway.sent["stream_options"] == {"include_usage": True}
    assert "".join(texts) == "Checking Zürich ☀️ and Paris"
    assert [(b.type, getattr(b, "input", None)) for b in message.content] == [
        ("text", None), ("tool_use", {"location": "Zürich"}), ("tool_use", {"location": "Paris"})]
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == 17


def test_openai_sdk_streams_from_an_anthropic_provider() -> None:
    gateway = Gateway(answer=ANTHROPIC_TOOL_STREAM)
    chunks = list(openai_client(gateway).chat.completions.create(
        **ASK_OPENAI, stream=True, stream_options={"include_usage": True}))
    assert gateway.sent["stream"] is True
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    arguments = "".join(call.function.arguments or "" for c in chunks if c.choices
                        for call in c.choices[0].delta.tool_calls or [] if call.function)
    assert text == "Okay, let me check the weather in Zürich ☀️:"
    assert json.loads(arguments) == {"location": "Zürich", "unit": "c"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 89


@pytest.mark.parametrize("cut_after", [300, len(OPENAI_TOOL_STREAM) // 2])
def test_a_cut_stream_raises_in_the_anthropic_sdk(cut_after: int) -> None:
    gateway = Gateway(answer=OPENAI_TOOL_STREAM, cut_after=cut_after)
    with pytest.raises(anthropic.APIStatusError, match="ended before its final event"):
        with anthropic_client(gateway).messages.stream(**ASK_ANTHROPIC) as stream:
            stream.get_final_message()


def test_a_cut_stream_raises_in_the_openai_sdk() -> None:
    gateway = Gateway(answer=ANTHROPIC_TOOL_STREAM, cut_after=len(ANTHROPIC_TOOL_STREAM) // 2)
    with pytest.raises(openai.APIError, match="ended before its final event"):
        list(openai_client(gateway).chat.completions.create(**ASK_OPENAI, stream=True))


ErrorCase = tuple[int, dict[str, Any], type[Exception]]


@pytest.mark.parametrize(("status", "body", "expected"), [
    (429, {"error": {"message": "Rate limit reached", "type": "tokens", "param": None,
                     "code": "rate_limit_exceeded"}}, anthropic.RateLimitError),
    (401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": None,
                     "code": "invalid_api_key"}}, anthropic.AuthenticationError),
    (500, {"error": {"message": "The server had an error", "type": "server_error", "param": None,
                     "code": None}}, anthropic.InternalServerError),
])
def test_anthropic_sdk_raises_its_own_error_for_an_openai_error(status: int, body: dict[str, Any],
                                                                expected: type[Exception]) -> None:
    with pytest.raises(expected) as raised:
        anthropic_client(Gateway(status, body)).messages.create(**ASK_ANTHROPIC)
    assert raised.value.body["error"]["message"] == body["error"]["message"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("status", "kind", "expected"), [
    (429, "rate_limit_error", openai.RateLimitError),
    (400, "invalid_request_error", openai.BadRequestError),
    (529, "overloaded_error", openai.InternalServerError),
])
def test_openai_sdk_raises_its_own_error_for_an_anthropic_error(status: int, kind: str,
                                                                expected: Callable[..., Exception]) -> None:
    body = {"type": "error", "error": {"type": kind, "message": "nope"}}
    with pytest.raises(expected) as raised:  # type: ignore[call-overload]
        openai_client(Gateway(status, body)).chat.completions.create(**ASK_OPENAI)
    assert raised.value.code == kind and raised.value.message.endswith("nope")
