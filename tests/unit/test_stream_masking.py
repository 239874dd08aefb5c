"""egressproxy/stream_masking.py: response guards on whole JSON answers and on SSE streams - masking across event
and chunk boundaries, the hold-back (only what could still become a match, at most MAX_HOLD_CHARS), flushes before
events that carry no text, pings passing, REJECT ending a stream with an error event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from egressproxy.pii_detectors import builtin, custom
from egressproxy.prompt_guard import MAX_HOLD_CHARS, RegexGuard
from egressproxy.stream_masking import SseGuardTap, guard_json_response
from egressproxy.taps import TapChain

CARD = "4111 1111 1111 1111"
MASK = RegexGuard("MASK", (builtin("CreditCard"), builtin("Email")), "TrafficPolicy/ns/p")
REJECT = RegexGuard("REJECT", (builtin("CreditCard"),), "TrafficPolicy/ns/p")


def openai_event(text: str | None, finish: str | None = None) -> bytes:
    delta = {} if text is None else {"content": text}
    obj = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def anthropic_event(text: str) -> bytes:
    obj = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
    return b"event: content_block_delta\ndata: " + json.dumps(obj).encode() + b"\n\n"


def texts(stream: bytes) -> list[str]:
    """The text deltas a client reads from a stream, in order."""
    out: list[str] = []
    for block in stream.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: ") and line != "data: [DONE]":
                obj: Any = json.loads(line[6:])
                if obj.get("type") == "content_block_delta":
                    out.append(obj["delta"]["text"])
                for choice in obj.get("choices") or ():
                    if choice["delta"].get("content"):
                        out.append(choice["delta"]["content"])
    return out


def run(tap: SseGuardTap, chunks: list[bytes]) -> list[bytes]:
    chain = TapChain([tap])
    outs: list[bytes] = []
    for c in chunks:
        out = chain(c)
        outs.append(b"".join(out) if isinstance(out, list) else out)
    end = chain(b"")
    outs.append(b"".join(end) if isinstance(end, list) else end)
    return outs


def test_a_card_split_over_two_events_is_masked_and_the_words_before_it_are_not_held() -> None:
    outs = run(SseGuardTap(MASK), [openai_event("Your card is 4111 1111"), openai_event(" 1111 1111, ok"),
                                   openai_event(None, "stop"), b"data: [DONE]\n\n"])
    assert texts(outs[0]) == ["Your card is "]  # released at once; only the digits wait
    assert "".join(texts(b"".join(outs))) == "Your card is <CREDIT_CARD>, ok"
    assert outs[-2] == b"data: [DONE]\n\n"


@pytest.mark.parametrize("size", [1, 3, 7, 64])
def test_any_chunking_of_the_bytes_gives_the_same_masked_text(size: int) -> None:
    body = b"".join([openai_event("mail bob@exa"), openai_event("mple.org and "), openai_event(CARD[:6]),
                     openai_event(CARD[6:] + " end"), openai_event(None, "stop"), b"data: [DONE]\n\n"])
    outs = run(SseGuardTap(MASK), [body[i : i + size] for i in range(0, len(body), size)])
    assert "".join(texts(b"".join(outs))) == "mail <EMAIL> and <CREDIT_CARD> end"


def test_anthropic_deltas_are_masked_and_flushed_before_the_block_stops() -> None:
    stop = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    ping = b'event: ping\ndata: {"type":"ping"}\n\n'
    outs = run(SseGuardTap(MASK), [anthropic_event("card 4111 1111 "), ping, anthropic_event("1111 1111"), stop])
    joined = b"".join(outs)
    assert outs[1] == ping  # a ping passes as it came, without flushing the held digits
    assert "".join(texts(joined)) == "card <CREDIT_CARD>"
    assert joined.index(b"<CREDIT_CARD>") < joined.index(b"content_block_stop")


def test_unchanged_events_pass_byte_for_byte() -> None:
    events = [openai_event("hello "), openai_event("world. "), openai_event(None, "stop")]
    assert b"".join(run(SseGuardTap(MASK), events)) == b"".join(events)


def test_the_hold_back_never_exceeds_its_cap() -> None:
    guard = RegexGuard("MASK", (custom(r"x+y", "xy"),), "TrafficPolicy/ns/p")
    tap = SseGuardTap(guard)
    tap.chunk(openai_event("x" * (MAX_HOLD_CHARS * 2)))
    assert tap.held_chars == MAX_HOLD_CHARS


def test_reject_ends_the_stream_with_an_error_event_and_drops_the_rest() -> None:
    rejected: list[str] = []
    outs = run(SseGuardTap(REJECT, rejected.append), [openai_event("number 4111 1111"), openai_event(" 1111 1111 end"),
                                                      openai_event("more"), b"data: [DONE]\n\n"])
    assert texts(outs[0]) == ["number "]
    assert b'"type": "prompt-rejected"' in outs[1] and b"4111" not in outs[1]
    assert outs[2:] == [b"", b"", b""]
    assert rejected == ["CreditCard"]


def test_reject_in_anthropic_format_is_an_error_event() -> None:
    outs = run(SseGuardTap(REJECT), [anthropic_event(f"card {CARD} x")])
    assert outs[0].startswith(b"event: error\n")


def test_json_answers_masked_or_refused() -> None:
    body = json.dumps({"choices": [{"message": {"role": "assistant", "content": f"card {CARD}"}}],
                       "usage": {"total_tokens": 4111111111111111}}).encode()
    masked, found = guard_json_response(MASK, body)
    assert found is None and masked is not None
    assert json.loads(masked)["choices"][0]["message"]["content"] == "card <CREDIT_CARD>"
    assert json.loads(masked)["usage"]["total_tokens"] == 4111111111111111  # numbers outside text untouched
    assert guard_json_response(REJECT, body) == (None, "CreditCard")
    anthropic = json.dumps({"content": [{"type": "text", "text": "mail a@b.io"}]}).encode()
    assert json.loads(guard_json_response(MASK, anthropic)[0] or b"")["content"][0]["text"] == "mail <EMAIL>"
    assert guard_json_response(MASK, b"not json") == (None, None)


def test_a_report_mode_reject_reports_once_and_lets_the_stream_pass() -> None:
    reported: list[str] = []
    guard = RegexGuard("REJECT", (builtin("CreditCard"),), "TrafficPolicy/ns/p", report=True)
    events = [openai_event(f"a {CARD} b"), openai_event(f"c {CARD} d"), openai_event(None, "stop")]
    outs = run(SseGuardTap(guard, reported.append), events)
    assert "".join(texts(b"".join(outs))) == f"a {CARD} bc {CARD} d"
    assert reported == ["CreditCard"]


def test_the_tap_fails_closed_with_an_error_event_never_the_raw_chunk() -> None:
    class Broken(RegexGuard):
        def open_from(self, text: str, pos: int = 0) -> int:
            raise RuntimeError(text)  # an error whose text would quote the body

    failures: list[BaseException] = []
    guard = Broken("MASK", (builtin("CreditCard"),), "TrafficPolicy/ns/p")
    outs = run(SseGuardTap(guard, on_error=failures.append), [openai_event(f"card {CARD}"), openai_event("more")])
    assert b"4111" not in b"".join(outs)
    assert b'"type": "prompt-rejected"' in outs[0] and outs[1:] == [b"", b""]
    assert len(failures) == 1
