"""Streaming translation both ways (egressproxy/ai_formats/stream_to_*.py, streams.py): event by event, at every
chunk boundary, and a stream that ends early is reported, never ended cleanly."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from egressproxy.ai_formats import (
    AnthropicToOpenAIStream,
    ApiFormat,
    MalformedPayload,
    OpenAIToAnthropicStream,
    StreamOutcome,
    StreamTranslator,
    stream_translator,
    to_anthropic_response,
    to_openai_response,
)
from egressproxy.ai_formats.sse import SseParser
from tests.unit.ai_format_fixtures import (
    ANTHROPIC_TOOL_STREAM,
    OPENAI_TEXT_STREAM,
    OPENAI_TOOL_STREAM,
    anthropic_sse,
    openai_sse,
)

Factory = Callable[[], StreamTranslator]
TO_OPENAI: Factory = lambda: AnthropicToOpenAIStream("claude-asked", include_usage=True, created=1700000000)  # noqa: E731
TO_ANTHROPIC: Factory = lambda: OpenAIToAnthropicStream("gpt-asked")  # noqa: E731
CASES = [
    pytest.param(TO_OPENAI, ANTHROPIC_TOOL_STREAM, id="anthropic-to-openai"),
    pytest.param(TO_ANTHROPIC, OPENAI_TOOL_STREAM, id="openai-tools-to-anthropic"),
    pytest.param(TO_ANTHROPIC, OPENAI_TEXT_STREAM, id="openai-text-to-anthropic"),
]


def events(body: bytes) -> list[tuple[str | None, Any]]:
    parser = SseParser()
    return [(e.event, e.data if e.data == "[DONE]" else json.loads(e.data)) for e in parser.feed(body)]


def translate(factory: Factory, pieces: list[bytes]) -> tuple[bytes, StreamOutcome]:
    translator = factory()
    out = b"".join(translator.feed(piece) for piece in pieces) + translator.end()
    return out, translator.outcome


def input_events(body: bytes) -> list[bytes]:
    """The stream cut into its events, each ending with its blank line (the fixtures use `\\n`)."""
    return [part + b"\n\n" for part in body.split(b"\n\n") if part]


# --- what comes out -----------------------------------------------------------------------------------------


def accumulate_openai(body: bytes) -> dict[str, Any]:
    """What an OpenAI SDK's stream helper assembles from chunks: text, tool calls, finish reason, usage."""
    text, calls, finish, usage = "", {}, None, None
    for _, chunk in events(body):
        if chunk == "[DONE]":
            break
        assert "error" not in chunk
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                entry = calls.setdefault(call["index"], {"id": None, "name": "", "arguments": ""})
                entry["id"] = call.get("id") or entry["id"]
                entry["name"] += call.get("function", {}).get("name") or ""
                entry["arguments"] += call.get("function", {}).get("arguments") or ""
            finish = choice["finish_reason"] or finish
    tool_calls = [{"id": c["id"], "name": c["name"], "input": json.loads(c["arguments"])}
                  for _, c in sorted(calls.items())]
    return {"text": text, "tool_calls": tool_calls, "finish_reason": finish, "usage": usage}


def accumulate_anthropic(body: bytes) -> dict[str, Any]:
    """What Anthropic's SDK assembles: content blocks by index, stop reason, usage; checks the event grammar."""
    content: list[dict[str, Any]] = []
    stop_reason, usage, open_index = None, {}, None
    sequence = events(body)
    assert sequence[0][1]["type"] == "message_start" and sequence[-1][1]["type"] == "message_stop"
    for name, event in sequence:
        assert name == event["type"]
        if event["type"] == "message_start":
            usage = dict(event["message"]["usage"])
        elif event["type"] == "content_block_start":
            assert open_index is None and event["index"] == len(content)
            content.append(dict(event["content_block"], partial=""))
            open_index = event["index"]
        elif event["type"] == "content_block_delta":
            assert event["index"] == open_index
            block, delta = content[open_index], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                block["partial"] += delta["partial_json"]
        elif event["type"] == "content_block_stop":
            assert event["index"] == open_index
            open_index = None
        elif event["type"] == "message_delta":
            stop_reason = event["delta"]["stop_reason"]
            usage.update(event["usage"])
    assert open_index is None
    for block in content:
        partial = block.pop("partial")
        if block["type"] == "tool_use":
            block["input"] = json.loads(partial)
    return {"content": content, "stop_reason": stop_reason, "usage": usage}


def test_anthropic_stream_becomes_openai_chunks() -> None:
    """Each Anthropic event maps to its chunk; tool input arrives as partial arguments; usage chunk, then [DONE]."""
    out, outcome = translate(TO_OPENAI, [ANTHROPIC_TOOL_STREAM])
    assert outcome is StreamOutcome.COMPLETE
    chunks = [data for _, data in events(out)]
    assert chunks[-1] == "[DONE]"
    assert {c["id"] for c in chunks[:-1]} == {"chatcmpl-01XFDUDYJgAACzvnptvVoYEL"}
    assert {c["model"] for c in chunks[:-1]} == {"claude-asked"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[3]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
         "function": {"name": "get_weather", "arguments": ""}}]
    assert chunks[-3]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}
    assert chunks[-2]["choices"] == []
    assert accumulate_openai(out) == {
        "text": "Okay, let me check the weather in Zürich ☀️:",
        "tool_calls": [{"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
                        "input": {"location": "Zürich", "unit": "c"}}],
        "finish_reason": "tool_calls",
        "usage": {"prompt_tokens": 500, "completion_tokens": 89, "total_tokens": 589},
    }


def test_usage_chunk_only_when_the_client_asked() -> None:
    out, _ = translate(lambda: AnthropicToOpenAIStream("m", include_usage=False), [ANTHROPIC_TOOL_STREAM])
    assert all(data == "[DONE]" or "usage" not in data for _, data in events(out))


def test_openai_stream_becomes_anthropic_events() -> None:
    """Text opens a text block; each new tool call index closes the open block and opens a tool_use block."""
    out, outcome = translate(TO_ANTHROPIC, [OPENAI_TOOL_STREAM])
    assert outcome is StreamOutcome.COMPLETE
    names = [name for name, _ in events(out)]
    assert names == ["message_start", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    start = events(out)[0][1]["message"]
    assert start["id"] == "msg_9xY2" and start["model"] == "gpt-asked"
    assert accumulate_anthropic(out) == {
        "content": [
            {"type": "text", "text": "Checking Zürich ☀️ and Paris"},
            {"type": "tool_use", "id": "call_Zk1", "name": "get_weather", "input": {"location": "Zürich"}},
            {"type": "tool_use", "id": "call_Pa2", "name": "get_weather", "input": {"location": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 82, "output_tokens": 17},
    }


def test_streams_agree_with_the_non_streamed_translation() -> None:
    """Assembling a translated stream gives what translating the assembled response gives."""
    anthropic = accumulate_anthropic(translate(TO_ANTHROPIC, [OPENAI_TOOL_STREAM])[0])
    message = {"id": "msg_x", "content": anthropic["content"], "stop_reason": anthropic["stop_reason"],
               "usage": anthropic["usage"]}
    direct = to_openai_response(message, "m", created=0)["choices"][0]
    streamed = accumulate_openai(OPENAI_TOOL_STREAM)
    assert direct["message"]["content"] == streamed["text"]
    assert [json.loads(c["function"]["arguments"]) for c in direct["message"]["tool_calls"]] == \
        [c["input"] for c in streamed["tool_calls"]]
    assert direct["finish_reason"] == streamed["finish_reason"]

    openai = accumulate_openai(translate(TO_OPENAI, [ANTHROPIC_TOOL_STREAM])[0])
    completion = {"id": "c", "choices": [{"index": 0, "finish_reason": openai["finish_reason"], "message": {
        "content": openai["text"],
        "tool_calls": [{"id": c["id"], "type": "function",
                        "function": {"name": c["name"], "arguments": json.dumps(c["input"])}}
                       for c in openai["tool_calls"]]}}], "usage": openai["usage"]}
    back = to_anthropic_response(completion, "m")
    assert back["content"] == accumulate_anthropic(ANTHROPIC_TOOL_STREAM)["content"]
    assert back["stop_reason"] == "tool_use"


@pytest.mark.parametrize("body", [OPENAI_TOOL_STREAM, OPENAI_TEXT_STREAM], ids=["tools", "text"])
def test_openai_round_trip_through_anthropic(body: bytes) -> None:
    """OpenAI -> Anthropic -> OpenAI keeps text, tool calls (ids, names, arguments), finish reason and usage."""
    anthropic, _ = translate(TO_ANTHROPIC, [body])
    back, outcome = translate(lambda: AnthropicToOpenAIStream("m", include_usage=True), [anthropic])
    assert outcome is StreamOutcome.COMPLETE
    assert accumulate_openai(back) == accumulate_openai(body)


def test_anthropic_round_trip_through_openai() -> None:
    openai, _ = translate(TO_OPENAI, [ANTHROPIC_TOOL_STREAM])
    back, outcome = translate(TO_ANTHROPIC, [openai])
    assert outcome is StreamOutcome.COMPLETE
    original = accumulate_anthropic(ANTHROPIC_TOOL_STREAM)
    again = accumulate_anthropic(back)
    assert again["content"] == original["content"] and again["stop_reason"] == original["stop_reason"]
    assert again["usage"] == {"input_tokens": 500, "output_tokens": 89}  # cache reads count as input


# --- chunk boundaries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("factory", "body"), CASES)
def test_every_split_point_gives_the_same_output_as_soon_as_events_complete(factory: Factory, body: bytes) -> None:
    """Split anywhere (inside a UTF-8 character too): the first piece yields exactly the output of the events it
    completes, and both pieces together yield the whole translation."""
    whole, _ = translate(factory, [body])
    boundaries, prefix_outputs = [0], [b""]
    translator = factory()
    for event in input_events(body):
        prefix_outputs.append(prefix_outputs[-1] + translator.feed(event))
        boundaries.append(boundaries[-1] + len(event))
    for split in range(len(body) + 1):
        translator = factory()
        first = translator.feed(body[:split])
        complete = max(i for i, boundary in enumerate(boundaries) if boundary <= split)
        assert first == prefix_outputs[complete], split
        assert first + translator.feed(body[split:]) + translator.end() == whole, split
        assert translator.outcome is StreamOutcome.COMPLETE


@pytest.mark.parametrize(("factory", "body"), CASES)
@pytest.mark.parametrize("line_end", [b"\r\n", b"\r"], ids=["crlf", "cr"])
def test_other_line_ends_split_anywhere(factory: Factory, body: bytes, line_end: bytes) -> None:
    """`\\r\\n` split between its two bytes is one line end, not two (which would end an event early)."""
    whole, _ = translate(factory, [body])
    other = body.replace(b"\n", line_end)
    for split in range(len(other) + 1):
        out, outcome = translate(factory, [other[:split], other[split:]])
        assert (out, outcome) == (whole, StreamOutcome.COMPLETE), split


@pytest.mark.parametrize(("factory", "body"), CASES)
def test_random_many_way_splits_and_single_bytes(factory: Factory, body: bytes) -> None:
    whole, _ = translate(factory, [body])
    assert translate(factory, [body[i:i + 1] for i in range(len(body))]) == (whole, StreamOutcome.COMPLETE)
    rng = random.Random(11)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(body)), rng.randint(2, 30)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
        assert translate(factory, pieces) == (whole, StreamOutcome.COMPLETE), cuts


# --- streams that end badly ---------------------------------------------------------------------------------


def test_an_anthropic_stream_without_message_stop_is_cut_at_every_point() -> None:
    for split in range(len(ANTHROPIC_TOOL_STREAM)):
        translator = TO_OPENAI()
        out = translator.feed(ANTHROPIC_TOOL_STREAM[:split]) + translator.end()
        assert translator.outcome is StreamOutcome.CUT, split
        assert b"[DONE]" not in out


def test_an_openai_stream_is_cut_until_its_finish_reason_arrived() -> None:
    """[DONE] is the terminal event; a stream that told its finish_reason and then closed (as some compatible
    servers do) completes, with zero usage if it reported none."""
    finish_end = OPENAI_TOOL_STREAM.index(b'"tool_calls"}]}\n\n') + len(b'"tool_calls"}]}\n\n')
    for split in range(len(OPENAI_TOOL_STREAM)):
        translator = TO_ANTHROPIC()
        out = translator.feed(OPENAI_TOOL_STREAM[:split]) + translator.end()
        if split >= finish_end:
            assert translator.outcome is StreamOutcome.COMPLETE, split
            assert accumulate_anthropic(out)["stop_reason"] == "tool_use"
        else:
            assert translator.outcome is StreamOutcome.CUT, split
            assert b"message_stop" not in out


@pytest.mark.parametrize(("factory", "client"), [(TO_OPENAI, ApiFormat.OPENAI_CHAT),
                                                 (TO_ANTHROPIC, ApiFormat.ANTHROPIC_MESSAGES)])
def test_cut_event_is_an_error_in_the_clients_format(factory: Factory, client: ApiFormat) -> None:
    translator = factory()
    assert translator.end() == b"" and translator.outcome is StreamOutcome.CUT
    [(name, data)] = events(translator.cut_event())
    if client is ApiFormat.ANTHROPIC_MESSAGES:
        assert name == "error" and data["type"] == "error" and data["error"]["type"] == "api_error"
    else:
        assert name is None and data["error"]["type"] == "server_error" and data["error"]["message"]


def test_anthropic_error_event_becomes_an_openai_error_chunk() -> None:
    body = ANTHROPIC_TOOL_STREAM.split(b"event: content_block_stop")[0] + anthropic_sse(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    translator = TO_OPENAI()
    out = translator.feed(body + b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
    assert translator.outcome is StreamOutcome.UPSTREAM_ERROR and translator.end() == b""
    assert events(out)[-1] == (None, {"error": {"message": "Overloaded", "type": "server_error", "param": None,
                                                "code": "overloaded_error"}})
    assert b"[DONE]" not in out


def test_openai_error_data_becomes_an_anthropic_error_event() -> None:
    body = OPENAI_TEXT_STREAM.split(b"data: {")[0:3]
    stream = b"data: {".join(body) + openai_sse({"error": {"message": "The server had an error", "type":
                                                           "server_error", "param": None, "code": None}})
    translator = TO_ANTHROPIC()
    out = translator.feed(stream)
    assert translator.outcome is StreamOutcome.UPSTREAM_ERROR
    assert events(out)[-1] == ("error", {"type": "error", "error": {"type": "api_error",
                                                                    "message": "The server had an error"}})


@pytest.mark.parametrize(("factory", "body"), [
    (TO_OPENAI, b"event: message_start\ndata: {not json\n\n"),
    (TO_OPENAI, anthropic_sse({"type": "content_block_delta", "index": 0,
                               "delta": {"type": "text_delta", "text": "x"}})),
    (TO_ANTHROPIC, b"data: [1, 2]\n\n"),
    (TO_ANTHROPIC, b"data: [DONE]\n\n"),
    (TO_ANTHROPIC, openai_sse(
        {"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "a", "function": {}}]}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "b", "function": {}}]}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {}}]}}]})),
], ids=["not-json", "before-message-start", "not-an-object", "done-first", "tool-call-resumed"])
def test_malformed_streams_raise_and_count_as_cut(factory: Factory, body: bytes) -> None:
    translator = factory()
    with pytest.raises(MalformedPayload):
        translator.feed(body)
    assert translator.outcome is StreamOutcome.CUT
    assert translator.feed(b"data: [DONE]\n\n") == b"" and translator.end() == b""


def test_blocks_openai_cannot_show_are_skipped() -> None:
    """Thinking and server-tool blocks (and their deltas) leave no trace in the OpenAI stream."""
    body = ANTHROPIC_TOOL_STREAM.split(b"event: content_block_start")[0] + anthropic_sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQB"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {
            "type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
        {"type": "message_stop"})
    out, outcome = translate(TO_OPENAI, [body])
    assert outcome is StreamOutcome.COMPLETE
    assert accumulate_openai(out)["text"] == "" and accumulate_openai(out)["tool_calls"] == []


def test_input_after_the_terminal_event_is_ignored() -> None:
    translator = TO_ANTHROPIC()
    translator.feed(OPENAI_TEXT_STREAM)
    assert translator.feed(OPENAI_TEXT_STREAM) == b"" and translator.end() == b""


def test_stream_translator_picks_by_formats() -> None:
    assert isinstance(stream_translator(ApiFormat.ANTHROPIC_MESSAGES, ApiFormat.OPENAI_CHAT, "m"),
                      AnthropicToOpenAIStream)
    assert isinstance(stream_translator(ApiFormat.OPENAI_CHAT, ApiFormat.ANTHROPIC_MESSAGES, "m"),
                      OpenAIToAnthropicStream)
    with pytest.raises(ValueError):
        stream_translator(ApiFormat.OPENAI_CHAT, ApiFormat.OPENAI_CHAT, "m")
