"""The incremental event-stream parser and encoder (egressproxy/ai_formats/sse.py)."""

from __future__ import annotations

import pytest

from egressproxy.ai_formats import MalformedPayload
from egressproxy.ai_formats.sse import MAX_EVENT_BYTES, SseEvent, SseParser, encode_event

STREAM = (
    ": a comment line\n"
    "event: message_start\n"
    "data: {\"a\": 1}\n"
    "\n"
    "id: 7\n"
    "retry: 100\n"
    "data:first\n"
    "data:  second\n"
    "\n"
    "event: ping\n"
    "\n"
    "data: ünïcødé ☀️\n"
    "\n"
).encode()
EXPECTED = [SseEvent("message_start", '{"a": 1}'), SseEvent(None, "first\n second"), SseEvent(None, "ünïcødé ☀️")]


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_events_at_every_split_point(line_end: str) -> None:
    """Fields, comments, multi-line data and an event with no data (not dispatched), whatever the line end and
    wherever the chunk boundary falls: between `\\r` and `\\n` too, which must not end the event name's line twice
    (a second, empty line would dispatch and forget the name)."""
    body = STREAM.replace(b"\n", line_end.encode())
    for split in range(len(body) + 1):
        parser = SseParser()
        got = parser.feed(body[:split]) + parser.feed(body[split:])
        assert got == EXPECTED, split
        assert not parser.pending


def test_an_event_is_dispatched_when_its_blank_line_arrives() -> None:
    parser = SseParser()
    assert parser.feed(b"event: x\ndata: 1\n") == []
    assert parser.pending
    assert parser.feed(b"\n") == [SseEvent("x", "1")]
    assert not parser.pending


def test_a_cr_then_lf_in_separate_chunks_is_one_line_end() -> None:
    parser = SseParser()
    assert parser.feed(b"event: x\r") == []
    assert parser.feed(b"\n") == []  # the rest of the same line end, not a blank line
    assert parser.feed(b"data: 1\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r") == [SseEvent("x", "1")]  # the blank line dispatches at once
    assert parser.feed(b"\n") == []
    assert not parser.pending


def test_an_unfinished_event_is_pending_and_never_dispatched() -> None:
    parser = SseParser()
    assert parser.feed(b"data: {\"cut\": tr") == []
    assert parser.pending


def test_an_oversized_event_is_refused() -> None:
    parser = SseParser()
    with pytest.raises(MalformedPayload):
        parser.feed(b"data: " + b"x" * (MAX_EVENT_BYTES + 1))


def test_encode_event() -> None:
    assert encode_event({"type": "ping"}, "ping") == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert encode_event("[DONE]") == b"data: [DONE]\n\n"
    assert encode_event({"t": "ü"}) == 'data: {"t":"ü"}\n\n'.encode()
