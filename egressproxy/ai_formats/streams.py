"""What both stream translators share: SSE in, the client's SSE out, and how the stream ended.

A translator is a state machine fed the provider's body in whatever chunks the network delivers; each `feed`
returns the bytes of the client's format that the completed input events produce (an event split across chunks
produces its output when its last byte arrives, never later). When the provider's body ends, `end()` returns any
last bytes and settles `outcome`:

- `COMPLETE`: the provider's terminal event arrived (Anthropic `message_stop`, OpenAI `data: [DONE]`, or an
  OpenAI stream that reported its `finish_reason` and then closed without `[DONE]`, which some compatible
  servers do); the translated stream ended cleanly.
- `UPSTREAM_ERROR`: the provider sent an error event; it was translated and sent, the stream is over.
- `CUT`: the body ended (or was abandoned) before the terminal event: the caller must not end the client's
  stream cleanly; send `cut_event()` (an error event in the client's format) or reset the stream.

`feed` raises `MalformedPayload` for an event that is not its format (not JSON, out of order); the outcome is
then `CUT`. Input after the terminal event is ignored.

    translator = AnthropicToOpenAIStream(reported_model="gpt-4o", include_usage=True)
    for chunk in provider_body:
        send(translator.feed(chunk))
    send(translator.end())
    if translator.outcome is StreamOutcome.CUT:
        send(translator.cut_event())
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from enum import StrEnum
from typing import Any, ClassVar

from egressproxy.ai_formats.error_bodies import stream_error_event
from egressproxy.ai_formats.errors import MalformedPayload
from egressproxy.ai_formats.formats import ApiFormat
from egressproxy.ai_formats.sse import SseEvent, SseParser

__all__ = ["StreamOutcome", "StreamTranslator", "CUT_MESSAGE"]

CUT_MESSAGE = "the provider's stream ended before its final event"


class StreamOutcome(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    UPSTREAM_ERROR = "upstream-error"
    CUT = "cut"


class StreamTranslator(ABC):
    """Feed the provider's SSE bytes, send what comes back; see the module docstring for the contract."""

    client_format: ClassVar[ApiFormat]

    def __init__(self) -> None:
        self._parser = SseParser()
        self.outcome = StreamOutcome.RUNNING

    def feed(self, chunk: bytes) -> bytes:
        if self.outcome is not StreamOutcome.RUNNING:
            return b""
        out = bytearray()
        try:
            for event in self._parser.feed(chunk):
                out += self._event(event)
                if self.outcome is not StreamOutcome.RUNNING:
                    break
        except MalformedPayload:
            self.outcome = StreamOutcome.CUT
            raise
        return bytes(out)

    def end(self) -> bytes:
        """The provider's body ended: the last bytes to send; `outcome` is settled afterwards."""
        tail = b""
        if self.outcome is StreamOutcome.RUNNING:
            tail = self._input_ended()
            if self.outcome is StreamOutcome.RUNNING:
                self.outcome = StreamOutcome.CUT
        return tail

    def cut_event(self, message: str = CUT_MESSAGE) -> bytes:
        """The error event that ends a cut stream, in the client's format."""
        return stream_error_event(self.client_format, message)

    @abstractmethod
    def _event(self, event: SseEvent) -> bytes:
        """Translate one complete input event (set `outcome` when it is terminal)."""

    def _input_ended(self) -> bytes:
        """The body ended while running: a subclass may still complete (default: it was cut)."""
        return b""


def as_object(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (absent members read as absent)."""
    return value if isinstance(value, dict) else {}


def parse_json(event: SseEvent) -> dict[str, Any]:
    try:
        data = json.loads(event.data)
    except ValueError:
        raise MalformedPayload("", "an event's data is not JSON") from None
    if not isinstance(data, dict):
        raise MalformedPayload("", "an event's data is not a JSON object")
    return data
