"""Server-sent events, incrementally: bytes in arbitrary chunks -> complete events, and events -> bytes.

The parsing rules are the WHATWG event-stream ones, reduced to what the two chat APIs use:
- a line ends at `\\n`, `\\r\\n` or `\\r` (a `\\r` at the end of a chunk waits for the next one, which may
  start with the `\\n` of the same line end);
- `event:` names the event, each `data:` line adds one line of data (joined with `\\n`), one space after the
  colon is dropped, lines starting with `:` are comments, other fields (`id`, `retry`) are ignored;
- a blank line dispatches the event, if it had any data; an event cut off by the end of the stream is never
  dispatched (`SseParser.pending` tells the caller something was left over).
Lines are decoded as UTF-8 only once complete, so a character split across chunks is whole again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from egressproxy.ai_formats.errors import MalformedPayload

__all__ = ["SseEvent", "SseParser", "encode_event", "MAX_EVENT_BYTES"]

_LINE_END = re.compile(rb"\r\n|\r|\n")
MAX_EVENT_BYTES = 16 * 1024 * 1024  # one event larger than this is a malformed stream, not a buffer to grow


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str | None
    data: str


class SseParser:
    """Feed bytes, get the events each chunk completes."""

    def __init__(self) -> None:
        self._partial = bytearray()  # the current line, not yet ended (never holds a line end)
        self._after_cr = False  # the last chunk ended with `\r`: a leading `\n` belongs to that line end
        self._event: str | None = None
        self._data: list[str] = []

    @property
    def pending(self) -> bool:
        """Whether bytes of an undispatched event are held (at the end of input: the stream was cut mid-event)."""
        return bool(self._partial.strip()) or bool(self._data) or self._event is not None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
            self._after_cr = False
        if chunk:
            self._after_cr = chunk.endswith(b"\r")
        pieces = _LINE_END.split(chunk)
        events: list[SseEvent] = []
        for piece in pieces[:-1]:
            self._partial += piece
            line = self._partial.decode("utf-8", "replace")
            self._partial.clear()
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._partial += pieces[-1]
        if len(self._partial) > MAX_EVENT_BYTES or sum(map(len, self._data)) > MAX_EVENT_BYTES:
            raise MalformedPayload("", "an event-stream event exceeds the size limit")
        return events

    def _line(self, line: str) -> SseEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        event, data = self._event, self._data
        self._event, self._data = None, []
        if not data:
            return None
        return SseEvent(event, "\n".join(data))


def encode_event(data: Any, event: str | None = None) -> bytes:
    """One event: `event: NAME` (if named) and a single `data:` line of compact JSON (or a raw string)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()
