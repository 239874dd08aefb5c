"""A scripted fake AI provider for failover tests: one TLS (or plain) origin whose answers each test chooses.

Each request names its test case in the `x-test-case` header; the origin answers with that case's script (a
list of steps, one consumed per request; the last repeats) and records what it received (path, headers,
body hash and length). A request to a path ending in `/v1/messages` is answered in Anthropic's Messages format
(JSON message, SSE events `message_start` ... `message_stop`), any other in OpenAI's. Steps:

- `Json(status, body, headers)`: a whole answer;
- `Sse(events, wait_after=i, gate=Event)`: an OpenAI-style stream; after event `i` it waits for `gate` (a test
  sets it once its client has seen that event: proof the stream is not buffered), then sends the rest;
- `Reset(events, sse=True)`: sends some events (or body bytes) and then drops the connection mid-stream;
- `Hang(seconds)`: sends nothing for `seconds` (then a 200).
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Json:
    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Sse:
    events: int = 3
    wait_after: int | None = None
    gate: threading.Event | None = None
    gate_timeout: float = 10.0


@dataclass
class Reset:
    events: int = 1
    sse: bool = True


@dataclass
class Hang:
    seconds: float = 3.0


Step = Json | Sse | Reset | Hang


@dataclass
class Seen:
    case: str
    path: str
    headers: dict[str, str]
    body_sha256: str
    body_len: int
    body: bytes


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def openai_event(i: int, origin: str) -> bytes:
    payload = {"id": "c1", "object": "chat.completion.chunk", "model": origin,
               "choices": [{"index": 0, "delta": {"content": f"{origin}-{i} "}, "finish_reason": None}]}
    return f"data: {json.dumps(payload)}\n\n".encode()


def anthropic_event(kind: str, payload: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()


def stream_head(origin: str, anthropic: bool) -> bytes:
    if not anthropic:
        return b""
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": origin, "content": [],
               "stop_reason": None, "usage": {"input_tokens": 3, "output_tokens": 0}}
    return anthropic_event("message_start", {"message": message}) + anthropic_event(
        "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})


def stream_event(i: int, origin: str, anthropic: bool) -> bytes:
    if not anthropic:
        return openai_event(i, origin)
    return anthropic_event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": f"{origin}-{i} "}})


def stream_tail(anthropic: bool) -> bytes:
    if not anthropic:
        return b"data: [DONE]\n\n"
    return (anthropic_event("content_block_stop", {"index": 0})
            + anthropic_event("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}})
            + anthropic_event("message_stop", {}))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        case = self.headers.get("x-test-case", "")
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.seen.append(Seen(case, self.path, headers, hashlib.sha256(body).hexdigest(), len(body), body))
        step = self.server.owner.next_step(case)
        name = self.server.owner.name
        anthropic = self.path.split("?", 1)[0].endswith("/v1/messages")
        if isinstance(step, Hang):
            time.sleep(step.seconds)
            step = Json()
        if isinstance(step, Json):
            default = _message(name) if anthropic else _completion(name)
            payload = json.dumps(step.body if step.body is not None else default).encode()
            self.send_response(step.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for k, v in step.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream" if not isinstance(step, Reset) or step.sse else "application/octet-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        head = stream_head(name, anthropic)
        if head:
            self.wfile.write(chunk(head))
        if isinstance(step, Reset):
            for i in range(step.events):
                self.wfile.write(chunk(stream_event(i, name, anthropic)))
            self.wfile.flush()
            time.sleep(0.2)
            # An abortive close (RST): the stream dies without its terminating chunk.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        for i in range(step.events):
            self.wfile.write(chunk(stream_event(i, name, anthropic)))
            self.wfile.flush()
            if step.wait_after == i and step.gate is not None:
                if not step.gate.wait(step.gate_timeout):
                    self.wfile.write(chunk(b"data: {\"late\": true}\n\n"))
        self.wfile.write(chunk(stream_tail(anthropic)) + b"0\r\n\r\n")
        self.wfile.flush()

    do_GET = do_PUT = do_DELETE = do_POST


def _completion(origin: str) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "model": origin, "created": 0,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"from {origin}"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def _message(origin: str) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": origin, "stop_reason": "end_turn",
            "stop_sequence": None, "content": [{"type": "text", "text": f"from {origin}"}],
            "usage": {"input_tokens": 1, "output_tokens": 1}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "ProviderOrigin"
    seen: list[Seen]


class ProviderOrigin:
    """A fake provider on (host, port); `tls=(cert, key)` for HTTPS."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0, tls: tuple[Path, Path] | None = None) -> None:
        self.name = name
        self.scripts: dict[str, list[Step]] = {}
        self._lock = threading.Lock()
        self.server = _Server((host, port), _Handler)
        self.server.owner = self
        self.server.seen = []
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.host, self.port = self.server.server_address[:2]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def script(self, case: str, *steps: Step) -> None:
        with self._lock:
            self.scripts[case] = list(steps)

    def next_step(self, case: str) -> Step:
        with self._lock:
            steps = self.scripts.get(case) or [Json()]
            return steps.pop(0) if len(steps) > 1 else steps[0]

    def seen(self, case: str) -> list[Seen]:
        return [s for s in list(self.server.seen) if s.case == case]

    def __enter__(self) -> "ProviderOrigin":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
