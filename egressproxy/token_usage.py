"""Counting the LLM tokens a provider reports in a response, as a body tap (seam 5): the body streams on untouched.

What is read (the usage each provider reports itself; nothing is estimated):
- JSON responses: OpenAI's `usage.total_tokens`; Anthropic's `usage.input_tokens + usage.output_tokens`. The
  JSON is copied aside (at most `MAX_JSON_BYTES`) and parsed once at the end.
- Server-sent events: every `data:` line is parsed as it completes. OpenAI's final usage chunk (sent when the
  client asks with `stream_options: {include_usage: true}`) gives `usage.total_tokens`; Anthropic's
  `message_start` gives `message.usage.input_tokens` and each `message_delta` a cumulative
  `usage.output_tokens` (the last one counts).
- A `Content-Encoding` of gzip, deflate or br is decoded on a copy (what the client gets is untouched); any
  other encoding, or a body that reports no usage, counts 0.

For the `gen_ai_client_token_usage` histogram the usage is also split into input and output tokens
(`TokenUsage.input_tokens` / `output_tokens`): OpenAI's `prompt_tokens` / `completion_tokens`; Anthropic's input is
`input_tokens + cache_read_input_tokens + cache_creation_input_tokens` (the prompt the model read, cached or not)
and its output the last cumulative `output_tokens`. The rate-limit total above is unchanged by that split.

When the body ends, `on_usage(tokens)` is called once (also for 0 tokens). Each chunk costs one copy and, for
SSE, a split on newlines; JSON parsing happens only per complete event.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from egressproxy.taps import Tap

__all__ = ["TokenUsage", "TokenCountingTap", "usage_of"]

MAX_JSON_BYTES = 4 * 1024 * 1024  # a JSON body larger than this is not parsed for usage
MAX_LINE_BYTES = 1024 * 1024  # an SSE line longer than this is skipped
MAX_DECODED_BYTES = 64 * 1024 * 1024  # a stream is read for usage up to this many (decoded) bytes


class TokenUsage:
    """Usage as reported so far: a total (OpenAI), or input and output counts (Anthropic)."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.input = 0
        self.output = 0
        self.prompt: int | None = None  # OpenAI prompt_tokens
        self.completion: int | None = None  # OpenAI completion_tokens
        self.cache_read = 0  # Anthropic cache_read_input_tokens
        self.cache_creation = 0  # Anthropic cache_creation_input_tokens
        self.seen = False  # the body reported some usage

    @property
    def input_tokens(self) -> int:
        """Input tokens as the GenAI semantic conventions count them (cached prompt tokens included)."""
        if self.prompt is not None:
            return self.prompt
        return self.input + self.cache_read + self.cache_creation

    @property
    def output_tokens(self) -> int:
        return self.completion if self.completion is not None else self.output

    @property
    def tokens(self) -> int:
        return self.total if self.total is not None else self.input + self.output

    def add_event(self, event: Any) -> None:
        """One parsed JSON body or SSE event."""
        if not isinstance(event, dict):
            return
        message = event.get("message")
        if isinstance(message, dict):  # Anthropic message_start
            self._add_usage(message.get("usage"))
        self._add_usage(event.get("usage"))

    def _add_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        self.seen = True
        total = _int(usage.get("total_tokens"))
        if total is not None:
            self.total = total
            self.prompt = _int(usage.get("prompt_tokens"))
            self.completion = _int(usage.get("completion_tokens"))
            return
        for name in ("cache_read_input_tokens", "cache_creation_input_tokens"):
            cached = _int(usage.get(name))
            if cached is not None and cached > getattr(self, _CACHE_FIELDS[name]):
                setattr(self, _CACHE_FIELDS[name], cached)
        # Anthropic: input in message_start (and, in newer streams, repeated cumulatively in message_delta);
        # output_tokens cumulative in each message_delta: the latest value of each counts.
        prompt = _int(usage.get("input_tokens"))
        if prompt is not None:
            self.input = max(self.input, prompt)
        completion = _int(usage.get("output_tokens"))
        if completion is not None:
            self.output = max(self.output, completion)


_CACHE_FIELDS = {"cache_read_input_tokens": "cache_read", "cache_creation_input_tokens": "cache_creation"}


def usage_of(body: bytes) -> int:
    """Tokens a whole JSON response body reports (0 when it reports none)."""
    usage = TokenUsage()
    try:
        usage.add_event(json.loads(body))
    except ValueError:
        return 0
    return usage.tokens


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class _Decoder:
    """Incremental Content-Encoding decoding of a copy of the body, in pieces of at most `PIECE` bytes (a small
    compressed chunk never expands into one huge buffer)."""

    PIECE = 256 * 1024

    def __init__(self, encoding: str) -> None:
        encoding = encoding.strip().lower()
        self._zlib: Any = None
        self._brotli: Any = None
        self.usable = True
        if encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj()
        elif encoding == "br":
            try:
                import brotli  # mitmproxy's own dependency

                self._brotli = brotli.Decompressor()
            except ImportError:
                self.usable = False
        elif encoding not in ("", "identity"):
            self.usable = False

    def pieces(self, data: bytes) -> Iterator[bytes]:
        if self._zlib is not None:
            out = self._zlib.decompress(data, self.PIECE)
            yield out
            while self._zlib.unconsumed_tail:
                yield self._zlib.decompress(self._zlib.unconsumed_tail, self.PIECE)
        elif self._brotli is not None:
            yield self._brotli.process(data)
        else:
            yield data


class TokenCountingTap(Tap):
    """Counts the tokens a JSON or SSE response reports; returns every chunk unchanged."""

    name = "token-count"

    def __init__(self, content_type: str, content_encoding: str, on_usage: Callable[[int], None]) -> None:
        media = content_type.split(";", 1)[0].strip().lower()
        self.sse = media == "text/event-stream"
        self.json = not self.sse and (media == "application/json" or media.endswith("+json"))
        self.decoder = _Decoder(content_encoding)
        self.usage = TokenUsage()
        self.on_usage = on_usage
        self.reported = False
        self._buffer = bytearray()
        self._overflow = False
        self._decoded = 0

    @property
    def counting(self) -> bool:
        return (self.sse or self.json) and self.decoder.usable

    def chunk(self, data: bytes) -> bytes:
        if self.counting and not self._overflow:
            try:
                for piece in self.decoder.pieces(data):
                    self._decoded += len(piece)
                    if self._decoded > MAX_DECODED_BYTES:
                        self._overflow = True  # stop reading usage; the body itself still passes
                        break
                    self._take(piece)
            except Exception:  # zlib.error, brotli.error: a body that does not decode reports nothing readable
                self._overflow = True
        return data

    def end(self) -> bytes:
        if self.counting and self.json and not self._overflow and self._buffer:
            try:
                self.usage.add_event(json.loads(bytes(self._buffer)))
            except ValueError:
                pass
        elif self.counting and self.sse and self._buffer:
            self._line(bytes(self._buffer))
        self._buffer.clear()
        self.settle()
        return b""

    def settle(self) -> None:
        """Report the usage seen so far, once (the end of the body, or the flow failed mid-stream)."""
        if not self.reported:
            self.reported = True
            self.on_usage(self.usage.tokens)

    def _take(self, text: bytes) -> None:
        if self.json:
            if len(self._buffer) + len(text) > MAX_JSON_BYTES:
                self._overflow = True
                self._buffer.clear()
                return
            self._buffer += text
            return
        start = 0
        while True:
            newline = text.find(b"\n", start)
            if newline == -1:
                break
            if self._buffer:
                self._buffer += text[start:newline]
                line = bytes(self._buffer)
                self._buffer.clear()
            else:
                line = text[start:newline]
            self._line(line)
            start = newline + 1
        rest = text[start:]
        if len(self._buffer) + len(rest) > MAX_LINE_BYTES:
            self._buffer.clear()  # a runaway line: skip it
        else:
            self._buffer += rest

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if not payload.startswith(b"{") or b"usage" not in payload:
            return  # only events that can carry usage are parsed
        try:
            self.usage.add_event(json.loads(payload))
        except ValueError:
            pass
