"""An Anthropic Messages event stream -> an OpenAI `chat.completion.chunk` stream, event by event.

| Anthropic event                                  | OpenAI output                                               |
| ------------------------------------------------ | ----------------------------------------------------------- |
| `message_start`                                  | first chunk, `delta: {role: assistant, content: ""}`        |
| `content_block_start` text (with text)           | a `content` delta                                           |
| `content_block_start` tool_use                   | `tool_calls[{index, id, type: function, function: {name,    |
|                                                  | arguments: ""}}]` (index counts tool blocks from 0)         |
| `content_block_delta` text_delta                 | a `content` delta                                           |
| `content_block_delta` input_json_delta           | `tool_calls[{index, function: {arguments: PARTIAL}}]`       |
| `message_delta`                                  | a chunk with `delta: {}` and the `finish_reason`            |
| `message_stop`                                   | the usage chunk (`choices: []`, if the client asked with     |
|                                                  | `stream_options.include_usage`), then `data: [DONE]`        |
| `error`                                          | `data: {"error": {...}}` (what OpenAI streams on an error)  |
| `ping`, `content_block_stop`, thinking, other    | nothing                                                     |

Usage: input tokens (cache reads and writes included) from `message_start`, output tokens cumulative from each
`message_delta` (newer streams also repeat input counts there; the largest value counts).
"""

from __future__ import annotations

import json
import time
from typing import Any

from egressproxy.ai_formats.error_bodies import to_openai_error
from egressproxy.ai_formats.errors import MalformedPayload
from egressproxy.ai_formats.formats import ApiFormat
from egressproxy.ai_formats.responses import completion_id, openai_usage
from egressproxy.ai_formats.sse import SseEvent, encode_event
from egressproxy.ai_formats.stop_reasons import to_openai_finish_reason
from egressproxy.ai_formats.streams import StreamOutcome, StreamTranslator, as_object, parse_json

__all__ = ["AnthropicToOpenAIStream"]

_DONE = b"data: [DONE]\n\n"


class AnthropicToOpenAIStream(StreamTranslator):
    client_format = ApiFormat.OPENAI_CHAT

    def __init__(self, reported_model: str, include_usage: bool = False, created: int | None = None) -> None:
        super().__init__()
        self.reported_model = reported_model
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self._id: str | None = None
        self._tool_index: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool call index
        self._usage: dict[str, int] = {}

    def _event(self, event: SseEvent) -> bytes:
        data = parse_json(event)
        kind = data.get("type", event.event)
        if kind == "error":
            self.outcome = StreamOutcome.UPSTREAM_ERROR
            return encode_event(to_openai_error(data, None))
        if kind == "ping":
            return b""
        if kind == "message_start":
            return self._start(data)
        if self._id is None:
            raise MalformedPayload("", "an event before message_start")
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._block_delta(data)
        if kind == "message_delta":
            self._add_usage(data.get("usage"))
            delta = as_object(data.get("delta"))
            return self._chunk({}, to_openai_finish_reason(delta.get("stop_reason")) or "stop")
        if kind == "message_stop":
            self.outcome = StreamOutcome.COMPLETE
            usage = self._usage_chunk() if self.include_usage else b""
            return usage + _DONE
        return b""  # content_block_stop, and event types added after this was written

    def _start(self, data: dict[str, Any]) -> bytes:
        message = as_object(data.get("message"))
        self._id = completion_id(message.get("id"))
        self._add_usage(message.get("usage"))
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, data: dict[str, Any]) -> bytes:
        block = data.get("content_block")
        if not isinstance(block, dict):
            return b""
        if block.get("type") == "text":
            text = block.get("text")
            return self._chunk({"content": text}) if isinstance(text, str) and text else b""
        if block.get("type") != "tool_use":
            return b""
        index = self._tool_index[_index(data)] = len(self._tool_index)
        arguments = ""
        if isinstance(block.get("input"), dict) and block["input"]:
            arguments = _compact_json(block["input"])
        call = {"index": index, "id": str(block.get("id")), "type": "function",
                "function": {"name": str(block.get("name")), "arguments": arguments}}
        return self._chunk({"tool_calls": [call]})

    def _block_delta(self, data: dict[str, Any]) -> bytes:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            return b""
        if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str) and delta["text"]:
            return self._chunk({"content": delta["text"]})
        if delta.get("type") == "input_json_delta":
            partial = delta.get("partial_json")
            index = self._tool_index.get(_index(data))  # None: a server tool's input, which OpenAI cannot show
            if index is not None and isinstance(partial, str) and partial:
                return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": partial}}]})
        return b""  # thinking, signature and citation deltas have no OpenAI form

    def _add_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for key, value in usage.items():
            if isinstance(value, int) and not isinstance(value, bool):
                self._usage[key] = max(value, self._usage.get(key, 0))

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return encode_event({"id": self._id, "object": "chat.completion.chunk", "created": self.created,
                             "model": self.reported_model,
                             "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish_reason}]})

    def _usage_chunk(self) -> bytes:
        return encode_event({"id": self._id, "object": "chat.completion.chunk", "created": self.created,
                             "model": self.reported_model, "choices": [], "usage": openai_usage(self._usage)})


def _index(data: dict[str, Any]) -> int:
    index = data.get("index")
    if not isinstance(index, int):
        raise MalformedPayload("index", "a content block event without an index")
    return index


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
