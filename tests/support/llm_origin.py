"""A fake LLM provider on loopback that reports token usage the way OpenAI and Anthropic do.

- `POST /v1/chat/completions` (OpenAI): JSON with `usage.total_tokens`, or with `"stream": true` SSE chunks ending
  in a usage chunk (as with `stream_options.include_usage`) and `data: [DONE]`;
- `POST /v1/messages` (Anthropic): JSON with `usage.input_tokens`/`output_tokens`, or with `"stream": true`
  `message_start` (input tokens) and cumulative `message_delta` events;
- anything else: `{"ok": true}` with no usage.

A streamed answer sends its first event, then waits for `gate` (set by the test once that first event reached
the client through the gateway), then sends the rest: a gateway that buffered the stream could never pass the
first event early, and the test would time out instead.
"""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["LlmOrigin"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        self.server.requests.append(self.path)
        anthropic = self.path.startswith("/v1/messages")
        if not self.path.startswith(("/v1/chat/completions", "/v1/messages")):
            self._json({"ok": True})
        elif body.get("stream"):
            self._stream(self._anthropic_events() if anthropic else self._openai_events())
        else:
            self._json(self._anthropic_json() if anthropic else self._openai_json())

    do_GET = do_POST

    def _json(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i, event in enumerate(events):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
            if i == 0 and not self.server.gate.wait(10):
                self.close_connection = True
                return  # never released: the stream ends unfinished, and the client sees an error
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _openai_json(self) -> dict[str, Any]:
        i, o = self.server.input_tokens, self.server.output_tokens
        return {"id": "c", "object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": "hi"}}],
                "usage": {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}}

    def _anthropic_json(self) -> dict[str, Any]:
        return {"id": "m", "type": "message", "content": [{"type": "text", "text": "hi"}],
                "usage": {"input_tokens": self.server.input_tokens, "output_tokens": self.server.output_tokens}}

    def _openai_events(self) -> list[bytes]:
        i, o = self.server.input_tokens, self.server.output_tokens
        usage = {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}
        return [
            b'data: {"choices":[{"delta":{"content":"first"}}],"usage":null}\n\n',
            b'data: {"choices":[{"delta":{"content":"second"}}],"usage":null}\n\n',
            b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n",
            b"data: [DONE]\n\n",
        ]

    def _anthropic_events(self) -> list[bytes]:
        start = {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": self.server.input_tokens, "output_tokens": 1}}}
        half = {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 1}}
        final = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": self.server.output_tokens}}
        return [
            b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n",
            b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"hi"}}\n\n',
            b"event: message_delta\ndata: " + json.dumps(half).encode() + b"\n\n",
            b"event: message_delta\ndata: " + json.dumps(final).encode() + b"\n\n",
            b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
        ]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    requests: list[str]
    gate: threading.Event
    input_tokens: int
    output_tokens: int


class LlmOrigin:
    """The provider in a background thread; `tls=(cert, key)` makes it HTTPS. Each answer reports
    `input_tokens + output_tokens` tokens."""

    def __init__(self, input_tokens: int, output_tokens: int, tls: tuple[Path, Path] | None = None) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.requests = []
        self.server.gate = threading.Event()
        self.server.input_tokens, self.server.output_tokens = input_tokens, output_tokens
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def gate(self) -> threading.Event:
        return self.server.gate

    @property
    def requests(self) -> list[str]:
        return self.server.requests

    def __enter__(self) -> "LlmOrigin":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.gate.set()
        self.server.shutdown()
        self.server.server_close()
