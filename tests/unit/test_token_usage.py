"""Token counting from provider-reported usage (egressproxy/token_usage.py), chunk by chunk, bytes untouched."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from egressproxy.taps import TapChain
from egressproxy.token_usage import TokenCountingTap, usage_of

OPENAI_JSON = {"id": "c1", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 31, "total_tokens": 42}}
ANTHROPIC_JSON = {"id": "m1", "content": [], "usage": {"input_tokens": 25, "output_tokens": 17}}

OPENAI_SSE = (
    b'data: {"choices":[{"delta":{"content":"Hel"}}],"usage":null}\n\n'
    b'data: {"choices":[{"delta":{"content":"lo"}}],"usage":null}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}\n\n'
    b"data: [DONE]\n\n"
)
ANTHROPIC_SSE = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"m","usage":{"input_tokens":30,"output_tokens":1}}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":null},"usage":{"output_tokens":5}}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":12}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def run(body: bytes, content_type: str, encoding: str = "", chunk: int = 7) -> tuple[int | None, bytes]:
    """Feed `body` in `chunk`-byte pieces through a chain holding the tap; the usage reported and what passed."""
    seen: list[int] = []
    chain = TapChain([TokenCountingTap(content_type, encoding, seen.append)])
    out = b"".join(chain.feed(body[i : i + chunk]) for i in range(0, len(body), chunk)) + chain.finish()
    assert len(seen) <= 1
    return (seen[0] if seen else None), out


@pytest.mark.parametrize(
    ("body", "content_type", "tokens"),
    [
        (json.dumps(OPENAI_JSON).encode(), "application/json", 42),
        (json.dumps(ANTHROPIC_JSON).encode(), "application/json; charset=utf-8", 25 + 17),
        (OPENAI_SSE, "text/event-stream", 13),
        (ANTHROPIC_SSE, "text/event-stream; charset=utf-8", 30 + 12),
        (b'{"error": "no usage here"}', "application/json", 0),
        (b"not json", "application/json", 0),
        (json.dumps(OPENAI_JSON).encode(), "text/plain", 0),  # not a body that reports usage
        (b"data: {\"usage\": {\"total_tokens\": 5}}", "text/event-stream", 5),  # last line without a newline
    ],
)
@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_usage_is_counted_and_every_byte_passes_unchanged(body: bytes, content_type: str, tokens: int, chunk: int) -> None:
    assert run(body, content_type, chunk=chunk) == (tokens, body)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_body_is_read_on_a_decoded_copy(encoding: str) -> None:
    raw = json.dumps(OPENAI_JSON).encode()
    body = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    assert run(body, "application/json", encoding) == (42, body)


def test_an_unknown_encoding_counts_nothing_and_passes_the_body() -> None:
    assert run(b"\x00\x01zz", "application/json", "zstd") == (0, b"\x00\x01zz")


def test_a_body_that_does_not_decode_counts_nothing_and_passes_the_body() -> None:
    assert run(b"definitely not gzip", "application/json", "gzip") == (0, b"definitely not gzip")


def test_usage_is_reported_once_even_when_settled_after_the_end() -> None:
    seen: list[int] = []
    tap = TokenCountingTap("text/event-stream", "", seen.append)
    tap.chunk(OPENAI_SSE)
    tap.end()
    tap.settle()
    assert seen == [13]


def test_a_stream_cut_short_settles_what_it_saw() -> None:
    seen: list[int] = []
    tap = TokenCountingTap("text/event-stream", "", seen.append)
    tap.chunk(ANTHROPIC_SSE[: ANTHROPIC_SSE.index(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"")])
    tap.settle()  # the flow failed mid-stream
    assert seen == [30 + 5]


def test_usage_of_a_whole_body() -> None:
    assert usage_of(json.dumps(ANTHROPIC_JSON).encode()) == 42
    assert usage_of(b"[1, 2]") == 0


# --- the input/output split of gen_ai_client_token_usage -------------------------------------------------------

ANTHROPIC_CACHED_SSE = (
    b'data: {"type":"message_start","message":{"usage":{"input_tokens":7,"cache_read_input_tokens":100,'
    b'"cache_creation_input_tokens":20,"output_tokens":1}}}\n\n'
    b'data: {"type":"message_delta","usage":{"output_tokens":3}}\n\n'
    b'data: {"type":"message_delta","usage":{"output_tokens":9}}\n\n'
)


@pytest.mark.parametrize(
    ("body", "content_type", "split"),
    [
        (json.dumps(OPENAI_JSON).encode(), "application/json", (11, 31)),
        (OPENAI_SSE, "text/event-stream", (9, 4)),
        (json.dumps(ANTHROPIC_JSON).encode(), "application/json", (25, 17)),
        (ANTHROPIC_SSE, "text/event-stream", (30, 12)),  # output: the last cumulative message_delta
        (ANTHROPIC_CACHED_SSE, "text/event-stream", (7 + 100 + 20, 9)),  # input counts cache reads and writes
    ],
)
@pytest.mark.parametrize("chunk", [1, 10_000])
def test_input_and_output_tokens_are_split_as_the_semantic_conventions_count_them(
    body: bytes, content_type: str, split: tuple[int, int], chunk: int
) -> None:
    tap = TokenCountingTap(content_type, "", lambda n: None)
    chain = TapChain([tap])
    for i in range(0, len(body), chunk):
        chain.feed(body[i : i + chunk])
    chain.finish()
    assert tap.usage.seen
    assert (tap.usage.input_tokens, tap.usage.output_tokens) == split


def test_the_rate_limit_total_of_anthropic_leaves_cache_tokens_out_as_before() -> None:
    assert run(ANTHROPIC_CACHED_SSE, "text/event-stream")[0] == 7 + 9


def test_a_body_without_usage_is_not_seen() -> None:
    tap = TokenCountingTap("application/json", "", lambda n: None)
    TapChain([tap]).feed(b'{"ok": true}')
    tap.end()
    assert not tap.usage.seen
