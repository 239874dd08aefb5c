"""`promptGuard.response` on answers: whole JSON completions, and SSE streams across event boundaries.

A streamed answer arrives as content deltas (OpenAI `choices[].delta.content`, Anthropic `content_block_delta`
`text_delta`), and a card number may be split over two of them. `SseGuardTap` therefore judges the *assembled*
text of each choice / content block: of the text not yet sent it releases the part no match can still start
in, and holds back only the rest - from the start of the earliest partial match at the end (what more text could
complete: `4111 1111` is held, `hello ` is not), at most `MAX_HOLD_CHARS` characters. The released part goes out
in the event that completed it (its delta text replaced); an event that carries no text (a finish reason, the
usage, `message_delta`, `[DONE]`) first flushes what is held, as a delta event of its own, so the order of text
and the end of the stream are kept. `ping` events and role-only chunks pass without flushing.

MASK replaces each confirmed match in the released text. REJECT ends the stream when released text holds a
match: the match is never sent, an error event in the provider's format is, and everything after it is dropped.
A REJECT guard in Report mode (enforcementMode) reports the first match (`on_reject`) and lets the stream pass.

Events are rewritten only when their text changed: everything else passes byte for byte. Bytes of an event not
yet complete (no blank line yet) wait for the rest of it; that is the only other hold-back.

The tap fails closed: the tap chain would pass a failing tap's chunk on unchanged (right for counting, a leak
for a guard), so an unexpected error inside it ends the stream with the error event instead, and is reported to
`on_error` (counted by the addon). The log line names the exception's type only: its text could quote the body.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from egressproxy.chat_bodies import map_response_texts
from egressproxy.prompt_guard import MAX_HOLD_CHARS, REJECTED, RegexGuard
from egressproxy.taps import Tap

__all__ = ["SseGuardTap", "guard_json_response", "REJECTED_MESSAGE"]

REJECTED_MESSAGE = "the response was rejected by a prompt guard"

log = logging.getLogger("egressproxy")

Key = tuple[str, int]  # ("choice", index) for OpenAI, ("block", index) for Anthropic


def guard_json_response(guard: RegexGuard, body: bytes) -> tuple[bytes | None, str | None]:
    """A whole (non-streamed) completion: (the masked body or None when unchanged, the detector that made a
    REJECT guard refuse it or None). A body that is not JSON is left alone."""
    try:
        document = json.loads(body)
    except ValueError:
        return None, None
    if not guard.masks:
        found: list[str] = []

        def judge(text: str) -> str:
            name = guard.rejects(text)
            if name is not None:
                found.append(name)
            return text

        map_response_texts(document, judge)
        return None, (found[0] if found else None)
    if not map_response_texts(document, guard.mask):
        return None, None
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode(), None


class _Event:
    """One SSE event: its non-data lines as written, and its data (JSON when it parses)."""

    __slots__ = ("raw", "lines", "data", "obj")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
        self.lines = [line for line in text.split("\n") if line and not line.startswith("data:")]
        self.data = "\n".join(line[5:].removeprefix(" ") for line in text.split("\n") if line.startswith("data:"))
        self.obj: Any = None
        if self.data and self.data != "[DONE]":
            try:
                self.obj = json.loads(self.data)
            except ValueError:
                self.obj = None

    def encode(self, obj: Any) -> bytes:
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        return ("".join(f"{line}\n" for line in self.lines) + f"data: {data}\n\n").encode()


class SseGuardTap(Tap):
    """The response guard on a `text/event-stream` body (see the module docstring)."""

    name = "guardrail"

    def __init__(
        self,
        guard: RegexGuard,
        on_reject: Callable[[str], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.guard = guard
        self.on_reject = on_reject
        self.on_error = on_error
        self.pending = b""  # bytes of an event not yet complete
        self.held: dict[Key, str] = {}  # text not yet released, per choice / content block
        self.templates: dict[Key, tuple[_Event, Any]] = {}  # the last content event of each key, for flushes
        self.anthropic = False
        self.rejected = False
        self.reported = False

    @property
    def held_chars(self) -> int:
        return sum(len(t) for t in self.held.values())

    def chunk(self, data: bytes) -> bytes:
        try:
            return self._chunk(data)
        except Exception as e:
            return self._failed(e)

    def end(self) -> bytes:
        try:
            return self._end()
        except Exception as e:
            return self._failed(e)

    def _failed(self, error: Exception) -> bytes:
        log.error("guardrail tap failed (%s); the stream is ended with an error event", type(error).__name__)
        if self.on_error is not None:
            self.on_error(error)
        if self.rejected:
            return b""
        self.rejected = True
        self.held.clear()
        return self._error_event()

    def _chunk(self, data: bytes) -> bytes:
        if self.rejected:
            return b""
        self.pending += data
        out: list[bytes] = []
        while not self.rejected:
            end, sep = _event_end(self.pending)
            if end < 0:
                break
            raw, self.pending = self.pending[: end + sep], self.pending[end + sep :]
            out.append(self._event(_Event(raw)))
        return b"".join(out)

    def _end(self) -> bytes:
        if self.rejected:
            return b""
        out = self._flush()
        if self.pending.strip() and not self.rejected:
            out += self._event(_Event(self.pending))
        self.pending = b""
        return out

    # --- events -----------------------------------------------------------------------------------------------

    def _event(self, event: _Event) -> bytes:
        obj = event.obj
        if isinstance(obj, dict) and isinstance(obj.get("type"), str):
            self.anthropic = True
        deltas = _text_deltas(obj)
        if deltas is None:
            if _neutral(obj):
                return event.raw
            return self._flush() + (b"" if self.rejected else event.raw)
        changed = False
        out = b""
        for key, text, final, setter in deltas:
            self.templates[key] = (event, obj)
            released = self._release(key, text, final)
            if self.rejected:
                return out + self._error_event()
            if released != text:
                setter(released)
                changed = True
        return out + (event.encode(obj) if changed else event.raw)

    def _release(self, key: Key, text: str, final: bool) -> str:
        """Add `text` to what `key` holds; return what may go out now (masked), keeping the rest held."""
        whole = self.held.get(key, "") + text
        cut = len(whole) if final else self.guard.open_from(whole)
        cut = max(cut, len(whole) - MAX_HOLD_CHARS)
        out, self.held[key] = whole[:cut], whole[cut:]
        if not self.guard.masks:
            found = self.guard.rejects(out) if not self.reported else None
            if found is not None and self.guard.report:
                self.reported = True
                if self.on_reject is not None:
                    self.on_reject(found)
            elif found is not None:
                self._reject(found)
                return ""
            return out
        return self.guard.mask(out)

    def _flush(self) -> bytes:
        """Everything held goes out now (the stream reached an event that is not text), one delta per key."""
        out = b""
        for key in list(self.held):
            if not self.held[key]:
                continue
            text = self._release(key, "", final=True)
            if self.rejected:
                return out + self._error_event()
            out += self._synthetic(key, text)
        return out

    def _synthetic(self, key: Key, text: str) -> bytes:
        event, template = self.templates[key]
        kind, index = key
        obj: dict[str, Any]
        if kind == "block":
            obj = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}
        else:
            obj = {k: v for k, v in template.items() if k not in ("choices", "usage")}
            obj["choices"] = [{"index": index, "delta": {"content": text}, "finish_reason": None}]
        return event.encode(obj)

    def _reject(self, found: str) -> None:
        self.rejected = True
        self.held.clear()
        if self.on_reject is not None:
            self.on_reject(found)

    def _error_event(self) -> bytes:
        if self.anthropic:
            obj = {"type": "error", "error": {"type": REJECTED, "message": REJECTED_MESSAGE}}
            return b"event: error\ndata: " + json.dumps(obj).encode() + b"\n\n"
        obj = {"error": {"message": REJECTED_MESSAGE, "type": REJECTED, "code": REJECTED}}
        return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _event_end(buf: bytes) -> tuple[int, int]:
    """Where the first complete event ends (index of its blank line, and the separator's length), or (-1, 0)."""
    lf, crlf = buf.find(b"\n\n"), buf.find(b"\r\n\r\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, 4
    return (lf, 2) if lf >= 0 else (-1, 0)


def _neutral(obj: Any) -> bool:
    """An event that neither carries text nor ends any: a ping, an OpenAI role-only or tool-call chunk."""
    if not isinstance(obj, dict):
        return False
    if obj.get("type") in ("ping", "content_block_start", "message_start"):
        return True
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and obj.get("usage") is None:
        return all(isinstance(c, dict) and c.get("finish_reason") is None for c in choices)
    return False


def _text_deltas(obj: Any) -> list[tuple[Key, str, bool, Callable[[str], None]]] | None:
    """The text deltas an event carries, each (key, text, last of its key, how to replace it); None: none."""
    if not isinstance(obj, dict):
        return None
    if obj.get("type") == "content_block_delta":
        delta = obj.get("delta")
        if isinstance(delta, dict) and delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
            return [(("block", int(obj.get("index") or 0)), delta["text"], False, _setter(delta, "text"))]
        return None
    out: list[tuple[Key, str, bool, Callable[[str], None]]] = []
    for i, choice in enumerate(obj.get("choices") or ()):
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            index = choice.get("index", i)
            final = choice.get("finish_reason") is not None
            out.append((("choice", int(index) if isinstance(index, int) else i), delta["content"], final,
                        _setter(delta, "content")))
    return out or None


def _setter(holder: dict[str, Any], key: str) -> Callable[[str], None]:
    def put(value: str) -> None:
        holder[key] = value

    return put
