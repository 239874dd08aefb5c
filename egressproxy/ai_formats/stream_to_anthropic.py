"""An OpenAI `chat.completion.chunk` stream -> an Anthropic Messages event stream, event by event.

| OpenAI input                                     | Anthropic output                                            |
| ------------------------------------------------ | ----------------------------------------------------------- |
| the first chunk                                  | `message_start` (id, the reported model, zero usage)        |
| `delta.content` / `delta.refusal` (non-empty)    | `content_block_start` text (when no text block is open,     |
|                                                  | closing the open block first), then `text_delta`            |
| `delta.tool_calls[i]` with a new index           | `content_block_stop` of the open block, `content_block_start|
|                                                  | ` tool_use {id, name, input: {}}`                           |
| `delta.tool_calls[i].function.arguments`         | `input_json_delta` with the same partial JSON               |
| `finish_reason`                                  | `content_block_stop` of the open block                      |
| `usage` (the final usage chunk), once finished   | `message_delta` {stop_reason, usage}                         |
| `data: [DONE]`                                   | `message_delta` (if not sent yet), `message_stop`           |
| `data: {"error": {...}}`                         | `event: error` (Anthropic's error event)                    |

Only choice 0 is read (the translated request asked for one). A tool call index that comes back after another
call started cannot reopen its closed block: that stream is refused as malformed. Usage is whatever the provider
reported (the request translation asks for it with `stream_options.include_usage`); without it the counts are 0.
"""

from __future__ import annotations

from typing import Any

from egressproxy.ai_formats.error_bodies import to_anthropic_error
from egressproxy.ai_formats.errors import MalformedPayload
from egressproxy.ai_formats.formats import ApiFormat
from egressproxy.ai_formats.responses import anthropic_usage, message_id
from egressproxy.ai_formats.sse import SseEvent, encode_event
from egressproxy.ai_formats.stop_reasons import to_anthropic_stop_reason
from egressproxy.ai_formats.streams import StreamOutcome, StreamTranslator, as_object, parse_json

__all__ = ["OpenAIToAnthropicStream"]


class OpenAIToAnthropicStream(StreamTranslator):
    client_format = ApiFormat.ANTHROPIC_MESSAGES

    def __init__(self, reported_model: str) -> None:
        super().__init__()
        self.reported_model = reported_model
        self._started = False
        self._blocks = 0  # content blocks started so far (the next block's index)
        self._open: str | int | None = None  # "text", an OpenAI tool call index, or None
        self._tools_seen: set[int] = set()
        self._finish_reason: str | None = None
        self._usage: dict[str, int] | None = None
        self._delta_sent = False

    def _event(self, event: SseEvent) -> bytes:
        if event.data.strip() == "[DONE]":
            return self._done()
        data = parse_json(event)
        if "error" in data:
            self.outcome = StreamOutcome.UPSTREAM_ERROR
            return encode_event(to_anthropic_error(data, None), "error")
        out = bytearray()
        if not self._started:
            self._started = True
            out += _message_start(data, self.reported_model)
        choices = data.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    out += self._choice(choice)
        if isinstance(data.get("usage"), dict):
            self._usage = anthropic_usage(data["usage"])
        if self._finish_reason is not None and self._usage is not None and not self._delta_sent:
            out += self._message_delta()
        return bytes(out)

    def _input_ended(self) -> bytes:
        return self._done() if self._finish_reason is not None else b""

    def _choice(self, choice: dict[str, Any]) -> bytes:
        out = bytearray()
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for key in ("content", "refusal"):
                if isinstance(delta.get(key), str) and delta[key]:
                    out += self._text(delta[key])
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else []:
                if isinstance(call, dict):
                    out += self._tool_call(call)
        finish = choice.get("finish_reason")
        if finish is not None:
            self._finish_reason = to_anthropic_stop_reason(finish)
            out += self._close()
        return bytes(out)

    def _text(self, text: str) -> bytes:
        out = bytearray()
        if self._open != "text":
            out += self._close()
            out += self._block_start({"type": "text", "text": ""}, "text")
        out += self._block_event("content_block_delta", {"delta": {"type": "text_delta", "text": text}})
        return bytes(out)

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        index = call.get("index", 0)
        if not isinstance(index, int):
            raise MalformedPayload("tool_calls.index", "must be an integer")
        function = as_object(call.get("function"))
        out = bytearray()
        if self._open != index:
            if index in self._tools_seen:
                raise MalformedPayload("tool_calls.index", "a tool call resumed after another one started")
            self._tools_seen.add(index)
            out += self._close()
            call_id = call.get("id") if isinstance(call.get("id"), str) else f"toolu_translated_{index}"
            name = str(function.get("name") or "")
            block: dict[str, Any] = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
            out += self._block_start(block, index)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out += self._block_event("content_block_delta", {"delta": delta})
        return bytes(out)

    def _block_start(self, block: dict[str, Any], opened: str | int) -> bytes:
        self._open = opened
        self._blocks += 1
        return self._block_event("content_block_start", {"content_block": block})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        out = self._block_event("content_block_stop", {})
        self._open = None
        return out

    def _block_event(self, kind: str, fields: dict[str, Any]) -> bytes:
        return encode_event({"type": kind, "index": self._blocks - 1, **fields}, kind)

    def _message_delta(self) -> bytes:
        self._delta_sent = True
        usage = self._usage or {"input_tokens": 0, "output_tokens": 0}
        return encode_event({"type": "message_delta",
                             "delta": {"stop_reason": self._finish_reason or "end_turn", "stop_sequence": None},
                             "usage": usage}, "message_delta")

    def _done(self) -> bytes:
        if not self._started:
            raise MalformedPayload("", "the stream ended before its first chunk")
        out = self._close()
        if not self._delta_sent:
            out += self._message_delta()
        self.outcome = StreamOutcome.COMPLETE
        return out + encode_event({"type": "message_stop"}, "message_stop")


def _message_start(chunk: dict[str, Any], model: str) -> bytes:
    message: dict[str, Any] = {
        "id": message_id(chunk.get("id")), "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": anthropic_usage(chunk.get("usage")),
    }
    return encode_event({"type": "message_start", "message": message}, "message_start")
