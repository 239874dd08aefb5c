"""A fake chat provider on loopback that keeps every request body and answers with the text the test chose.

- `POST .../chat/completions` (OpenAI) and `POST .../v1/messages` (Anthropic): a JSON completion whose text is
  `"".join(reply)`, or with `"stream": true` an SSE stream with one content delta per item of `reply`, then the
  format's finishing events;
- `reply` is set by the test; `bodies` holds each request's JSON body as the origin received it.

A stream sends its first event, then waits for `gate` (set by the test once what it expected of that event
reached the client), then the rest: so a value split over two events is split over two reads at the gateway,
and a gateway that buffered the stream would never pass the first event early.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ChatOrigin"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else {}
        self.server.bodies.append(body)
        self.server.headers.append(dict(self.headers))
        anthropic = self.path.startswith("/v1/messages")
        reply = list(self.server.reply)
        if body.get("stream"):
            # the gate waits after the first text delta
            self._stream(_anthropic_events(reply) if anthropic else _openai_events(reply), 2 if anthropic else 1)
        else:
            self._json(_anthropic_json(reply) if anthropic else _openai_json(reply))

    def _json(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: list[bytes], gate_after: int) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i, event in enumerate(events):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
            if i == gate_after and not self.server.gate.wait(10):
                self.close_connection = True
                return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _openai_json(reply: list[str]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(reply)}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _anthropic_json(reply: list[str]) -> dict[str, Any]:
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku",
        "content": [{"type": "text", "text": "".join(reply)}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


def _sse(obj: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(obj) + "\n\n").encode()


def _openai_events(reply: list[str]) -> list[bytes]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    role = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    parts = [{**base, "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]} for t in reply]
    stop = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    return [_sse(role), *(_sse(p) for p in parts), _sse(stop), b"data: [DONE]\n\n"]


def _anthropic_events(reply: list[str]) -> list[bytes]:
    start = {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
             "model": "claude-3-5-haiku", "content": [], "stop_reason": None,
             "usage": {"input_tokens": 1, "output_tokens": 1}}}
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    deltas = [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}} for t in reply]
    return [
        _sse(start, "message_start"),
        _sse(block, "content_block_start"),
        *(_sse(d, "content_block_delta") for d in deltas),
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}, "message_delta"),
        _sse({"type": "message_stop"}, "message_stop"),
    ]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    bodies: list[dict[str, Any]]
    headers: list[dict[str, str]]
    reply: list[str]
    gate: threading.Event


class ChatOrigin:
    """The provider in a background thread, plain HTTP on 127.0.0.1."""

    def __init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.bodies, self.server.headers, self.server.reply = [], [], ["hello"]
        self.server.gate = threading.Event()
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return self.server.bodies

    @property
    def headers(self) -> list[dict[str, str]]:
        return self.server.headers

    @property
    def gate(self) -> threading.Event:
        return self.server.gate

    def answer(self, *reply: str) -> None:
        """What the next answers say, one streamed delta per item; the gate closes again."""
        self.server.reply = list(reply)
        self.server.gate.clear()

    def __enter__(self) -> "ChatOrigin":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.gate.set()
        self.server.shutdown()
        self.server.server_close()
