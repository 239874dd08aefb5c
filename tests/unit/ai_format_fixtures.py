"""Recorded-style bodies of both chat APIs, written for these tests after the shapes in OpenAI's and
Anthropic's public API references (ids, counts and texts are made up). Shared by the test_ai_formats_* files."""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "ANTHROPIC_TOOL_STREAM",
    "OPENAI_TOOL_STREAM",
    "OPENAI_TEXT_STREAM",
    "ANTHROPIC_TOOL_RESPONSE",
    "OPENAI_TOOL_RESPONSE",
    "anthropic_sse",
    "openai_sse",
]


def anthropic_sse(*events: dict[str, Any]) -> bytes:
    """Anthropic writes `event: TYPE` before each `data:` line."""
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def openai_sse(*chunks: dict[str, Any] | str) -> bytes:
    return b"".join(f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n".encode() for c in chunks)


ANTHROPIC_TOOL_STREAM = anthropic_sse(
    {"type": "message_start", "message": {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 472, "cache_read_input_tokens": 28, "output_tokens": 2}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Okay, let me check the "}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "weather in Zürich ☀️:"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"location\":"}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": " \"Zürich\""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ", \"unit\": \"c\"}"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 89}},
    {"type": "message_stop"},
)

_CHUNK = {"id": "chatcmpl-9xY2", "object": "chat.completion.chunk", "created": 1733468000, "model": "gpt-4o-mini",
          "system_fingerprint": "fp_44709d6fcb"}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {**_CHUNK, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


OPENAI_TOOL_STREAM = openai_sse(
    _chunk({"role": "assistant", "content": None, "refusal": None}),
    _chunk({"content": "Checking "}),
    _chunk({"content": "Zürich ☀️ and Paris"}),
    _chunk({"tool_calls": [{"index": 0, "id": "call_Zk1", "type": "function",
                            "function": {"name": "get_weather", "arguments": ""}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\""}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": \"Zürich\"}"}}]}),
    _chunk({"tool_calls": [{"index": 1, "id": "call_Pa2", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"location\": "}}]}),
    _chunk({"tool_calls": [{"index": 1, "function": {"arguments": "\"Paris\"}"}}]}),
    _chunk({}, "tool_calls"),
    {**_CHUNK, "choices": [], "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}},
    "[DONE]",
)

OPENAI_TEXT_STREAM = openai_sse(
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Hello"}),
    _chunk({"content": "! How can I help?"}),
    _chunk({}, "stop"),
    {**_CHUNK, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}},
    "[DONE]",
)

ANTHROPIC_TOOL_RESPONSE: dict[str, Any] = {
    "id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [
        {"type": "text", "text": "I'll look that up."},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
         "input": {"location": "San Francisco, CA", "unit": "celsius"}},
    ],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 2095, "output_tokens": 503},
}

OPENAI_TOOL_RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion", "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [{
        "index": 0,
        "message": {
            "role": "assistant", "content": "I'll look that up.", "refusal": None,
            "tool_calls": [{"id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"location\":\"Boston, MA\"}"}}],
        },
        "logprobs": None, "finish_reason": "tool_calls",
    }],
    "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99,
              "prompt_tokens_details": {"cached_tokens": 0}},
    "service_tier": "default", "system_fingerprint": "fp_fc9f1d7035",
}
