"""Fuzzing the event-stream readers (issue 14, item 8): the SSE parser of the format translation
(egressproxy/ai_formats/sse.py), the token-counting tap (token_usage.py) and the streamed response guard
(stream_masking.py). For any byte stream and any way of cutting it into chunks, each gives what it gives for
the whole stream in one piece, and none raises (the guard ends a stream it cannot read with its error event,
never with an exception)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from egressproxy.ai_formats.sse import SseEvent, SseParser
from egressproxy.pii_detectors import builtin, custom
from egressproxy.prompt_guard import RegexGuard
from egressproxy.stream_masking import SseGuardTap
from egressproxy.token_usage import TokenCountingTap

FUZZ = settings(max_examples=400, deadline=None)

# Pieces an event stream is made of, so that most examples are near-valid streams rather than noise.
_TEXT = st.text(alphabet=st.sampled_from("ab 4111-@x.é\u00e9"), max_size=24)
_JSON_EVENTS = st.one_of(
    st.builds(lambda t: {"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]}, _TEXT),
    st.builds(lambda t: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}, _TEXT),
    st.builds(lambda n: {"choices": [], "usage": {"total_tokens": n, "prompt_tokens": n, "completion_tokens": 0}},
              st.integers(0, 10**6)),
    st.builds(lambda n: {"type": "message_delta", "usage": {"output_tokens": n}}, st.integers(0, 10**6)),
    st.just({"type": "ping"}),
)
_LINE_ENDS = st.sampled_from([b"\n", b"\r\n", b"\r"])
_PIECES = st.one_of(
    _JSON_EVENTS.map(lambda o: b"data: " + json.dumps(o, ensure_ascii=False).encode()),
    st.sampled_from([b"data: [DONE]", b"event: message", b": comment", b"id: 7", b"data:", b"data", b"", b"\xff\xfe",
                     "data: caf\u00e9 4111 1111 1111 1111".encode()]),
    st.binary(max_size=16),
)
STREAMS = st.one_of(
    st.lists(st.tuples(_PIECES, _LINE_ENDS), max_size=12).map(lambda xs: b"".join(p + e for p, e in xs)),
    st.binary(max_size=200),
)


@st.composite
def chunkings(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A stream and the same bytes cut at arbitrary places (empty chunks included)."""
    stream = draw(STREAMS)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    bounds = [0, *cuts, len(stream)]
    return stream, [stream[a:b] for a, b in zip(bounds, bounds[1:])]


def parse(chunks: list[bytes]) -> tuple[list[SseEvent], bool]:
    parser = SseParser()
    events = [e for chunk in chunks for e in parser.feed(chunk)]
    return events, parser.pending


@FUZZ
@given(chunkings())
def test_sse_parser_gives_the_same_events_for_any_chunking(case: tuple[bytes, list[bytes]]) -> None:
    stream, chunks = case
    assert parse(chunks) == parse([stream])


@FUZZ
@given(chunkings())
def test_sse_parser_one_byte_at_a_time_is_the_whole(case: tuple[bytes, list[bytes]]) -> None:
    stream, _ = case
    assert parse([stream[i : i + 1] for i in range(len(stream))]) == parse([stream])


def count(chunks: list[bytes], content_type: str = "text/event-stream") -> tuple[list[int], bytes]:
    seen: list[int] = []
    tap = TokenCountingTap(content_type, "", seen.append)
    out = b"".join(tap.chunk(c) for c in chunks) + tap.end()
    return seen, out


@FUZZ
@given(chunkings(), st.sampled_from(["text/event-stream", "application/json"]))
def test_token_counting_is_the_same_for_any_chunking_and_passes_every_byte(
    case: tuple[bytes, list[bytes]], content_type: str
) -> None:
    stream, chunks = case
    seen, out = count(chunks, content_type)
    assert (seen, out) == count([stream], content_type)
    assert out == stream and len(seen) == 1


MASK = RegexGuard("MASK", (builtin("CreditCard"), custom(r"caf\w", "cafe")), "TrafficPolicy/ns/p")
REJECT = RegexGuard("REJECT", (builtin("CreditCard"),), "TrafficPolicy/ns/p")


def guard(chunks: list[bytes], regex_guard: RegexGuard) -> tuple[bytes, list[str], list[str]]:
    rejected: list[str] = []
    errors: list[str] = []
    tap = SseGuardTap(regex_guard, rejected.append, lambda e: errors.append(type(e).__name__))
    out = b"".join(tap.chunk(c) for c in chunks) + tap.end()
    return out, rejected, errors


@FUZZ
@given(chunkings(), st.sampled_from([MASK, REJECT]))
def test_stream_guard_writes_the_same_bytes_for_any_chunking_and_never_fails(
    case: tuple[bytes, list[bytes]], regex_guard: RegexGuard
) -> None:
    stream, chunks = case
    out, rejected, errors = guard(chunks, regex_guard)
    assert errors == []
    assert (out, rejected) == guard([stream], regex_guard)[:2]
