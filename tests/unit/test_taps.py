"""The body tap chain: every tap sees every chunk in order and the end; a capped copy; a failing tap is isolated."""

from __future__ import annotations

import pytest

from egressproxy.flowrecord import BodyCopy
from egressproxy.taps import CappedCopy, Tap, TapChain


class Recorder(Tap):
    def __init__(self, name: str) -> None:
        self.name = name
        self.chunks: list[bytes] = []
        self.ended = 0

    def chunk(self, data: bytes) -> bytes:
        self.chunks.append(data)
        return data

    def end(self) -> bytes:
        self.ended += 1
        return b""


class Upper(Tap):
    name = "upper"

    def chunk(self, data: bytes) -> bytes:
        return data.upper()


class HoldBack(Tap):
    """Holds back a trailing partial word, as a masking tap does for a pattern split across chunks."""

    name = "hold-back"

    def __init__(self) -> None:
        self.pending = b""

    def chunk(self, data: bytes) -> bytes:
        data = self.pending + data
        head, sep, tail = data.rpartition(b" ")
        self.pending = tail
        return head + sep

    def end(self) -> bytes:
        out, self.pending = self.pending, b""
        return out


class Explodes(Tap):
    name = "explodes"

    def __init__(self, on_call: int = 1, at_end: bool = False) -> None:
        self.calls = 0
        self.on_call = on_call
        self.at_end = at_end

    def chunk(self, data: bytes) -> bytes:
        self.calls += 1
        if not self.at_end and self.calls == self.on_call:
            raise RuntimeError("boom")
        return b"X" * len(data)

    def end(self) -> bytes:
        if self.at_end:
            raise RuntimeError("boom at end")
        return b""


def stream(chain: TapChain, chunks: list[bytes]) -> bytes:
    """What mitmproxy does with a stream callable: each chunk, then b"" once; the client gets what it returns."""
    out = b""
    for c in chunks:
        got = chain(c)
        out += got if isinstance(got, bytes) else b"".join(got)
    end = chain(b"")
    return out + (end if isinstance(end, bytes) else b"".join(end))


def test_every_tap_sees_every_chunk_in_order_and_the_end_once() -> None:
    first, second = Recorder("first"), Recorder("second")
    chain = TapChain([first, second])
    assert stream(chain, [b"da", b"ta: 1\n\n", b"data: 2\n\n"]) == b"data: 1\n\ndata: 2\n\n"
    assert first.chunks == second.chunks == [b"da", b"ta: 1\n\n", b"data: 2\n\n"]
    assert (first.ended, second.ended) == (1, 1)
    assert chain(b"") == b""  # a second end is no end
    assert first.ended == 1


def test_a_tap_sees_what_the_taps_before_it_returned() -> None:
    after = Recorder("after")
    assert stream(TapChain([Upper(), after]), [b"abc", b"def"]) == b"ABCDEF"
    assert after.chunks == [b"ABC", b"DEF"]


def test_bytes_held_back_are_released_at_the_end_through_the_later_taps() -> None:
    """A chunk boundary inside a word: the later taps see whole words, and nothing is lost at the end."""
    after = Recorder("after")
    chain = TapChain([HoldBack(), after])
    assert chain(b"hello wo") == b"hello "
    assert chain(b"rld") == []  # everything held back: no empty chunk (it would end a chunked HTTP/1 body)
    assert chain(b"") == b"world"
    assert after.chunks == [b"hello ", b"world"]
    assert after.ended == 1


@pytest.mark.parametrize(
    ("limit", "chunks", "expected"),
    [
        (10, [b"abc", b"def"], BodyCopy(b"abcdef", 6, False)),
        (4, [b"abc", b"def"], BodyCopy(b"abcd", 6, True)),
        (3, [b"abc", b"def"], BodyCopy(b"abc", 6, True)),
        (6, [b"abc", b"def"], BodyCopy(b"abcdef", 6, False)),
        (0, [b"abc"], BodyCopy(b"", 3, True)),
        (5, [], BodyCopy(b"", 0, False)),
    ],
)
def test_capped_copy_keeps_at_most_limit_bytes_and_the_full_size(limit: int, chunks: list[bytes], expected: BodyCopy) -> None:
    copy = CappedCopy(limit)
    body = b"".join(chunks)
    assert stream(TapChain([copy]), chunks) == body  # the stream itself is untouched
    assert copy.result() == expected


def test_a_failing_tap_passes_the_chunk_on_is_counted_and_left_out_afterwards() -> None:
    failures: list[str] = []
    bad, after = Explodes(on_call=2), Recorder("after")
    chain = TapChain([bad, after], on_error=lambda tap, e: failures.append(f"{tap.name}: {e}"))
    out = stream(chain, [b"one", b"two", b"three"])
    # first chunk rewritten by the tap; the chunk it failed on and every later one pass as they came
    assert out == b"XXXtwothree"
    assert after.chunks == [b"XXX", b"two", b"three"]
    assert failures == ["explodes: boom"]
    assert bad.calls == 2
    assert after.ended == 1


def test_a_tap_failing_at_the_end_does_not_stop_the_others_ending() -> None:
    failures: list[str] = []
    copy = CappedCopy(100)
    chain = TapChain([Explodes(at_end=True), copy], on_error=lambda tap, e: failures.append(tap.name))
    assert stream(chain, [b"ab"]) == b"XX"
    assert failures == ["explodes"]
    assert copy.result() == BodyCopy(b"XX", 2, False)


def test_an_error_reporter_that_raises_does_not_break_the_stream() -> None:
    def broken(tap: Tap, error: BaseException) -> None:
        raise ValueError("reporter down")

    assert stream(TapChain([Explodes()], on_error=broken), [b"a", b"b"]) == b"ab"


def test_chunks_after_the_end_pass_untouched() -> None:
    rec = Recorder("rec")
    chain = TapChain([Upper(), rec])
    assert chain(b"") == b""
    assert chain(b"late") == b"late"
    assert rec.chunks == []
