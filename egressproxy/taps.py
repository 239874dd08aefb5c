"""One ordered chain of chunk taps per body (DESIGN.md section 6, seam 5).

Bodies are streamed, never buffered whole (SSE must arrive event by event), so whatever wants to look at a
body - guardrail masking, token counting, capture - sees it chunk by chunk, in one fixed order: masking first
(so nothing later sees what it removes), then token counting, then the capture copy. A `TapChain` is the
callable mitmproxy's `flow.response.stream` accepts: it is called with each chunk and, at the end, with `b""`;
what it returns is what the client gets.

A tap that raises must never corrupt the stream: the chunk it failed on passes on as it was given to it, the
failure is reported to `on_error` (counted by the caller), and that tap is left out for the rest of the body
(its later view would be inconsistent anyway).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from egressproxy.flowrecord import BodyCopy

__all__ = ["Tap", "TapChain", "CappedCopy"]

log = logging.getLogger("egressproxy")


class Tap:
    """One stage of a body's tap chain: sees every chunk in order, then the end.

    Override what you need. What `chunk` returns is passed to the next tap (and finally to the peer), so a tap
    may rewrite bytes or hold some back and release them from `end` (a pattern split across two chunks)::

        class CountBytes(Tap):
            name = "count-bytes"

            def __init__(self) -> None:
                self.seen = 0

            def chunk(self, data: bytes) -> bytes:
                self.seen += len(data)
                return data

        chain = TapChain([CountBytes(), CappedCopy(65536)])
        flow.response.stream = chain  # mitmproxy calls it with each chunk, then with b""

    Keep `chunk` cheap: it runs inline on the event loop for every chunk of a streamed body.
    """

    name = "tap"

    def chunk(self, data: bytes) -> bytes:
        return data

    def end(self) -> bytes:
        """The body ended; return bytes still held back (b"" when none)."""
        return b""


class CappedCopy(Tap):
    """A copy of at most `limit` bytes of the body, with its full size and whether the copy is truncated."""

    name = "capture"

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.size = 0
        self._data = bytearray()

    def chunk(self, data: bytes) -> bytes:
        room = self.limit - len(self._data)
        if room > 0:
            self._data += data[:room]
        self.size += len(data)
        return data

    def result(self) -> BodyCopy:
        return BodyCopy(bytes(self._data), self.size, self.size > len(self._data))


class TapChain:
    """Taps in order; callable as mitmproxy's stream function (each chunk, then b"" once at the end)."""

    def __init__(self, taps: Iterable[Tap], on_error: Callable[[Tap, BaseException], None] | None = None) -> None:
        self.taps = list(taps)
        self.on_error = on_error
        self.ended = False

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        if data:
            # Never an empty chunk mid-body (a tap held everything back): mitmproxy would send it, and on a
            # chunked HTTP/1 body an empty chunk is the end of the body.
            return self.feed(data) or []
        return self.finish()

    def feed(self, data: bytes) -> bytes:
        """One chunk through every tap; what the last one returns. After the end, chunks pass untouched."""
        if self.ended:
            return data
        for tap in list(self.taps):
            if not data:
                break  # a tap held everything back: nothing for the next ones yet
            data = self._chunk(tap, data)
        return data

    def finish(self) -> bytes:
        """The end, once: each tap's held-back bytes go through the taps after it, then that tap's end."""
        if self.ended:
            return b""
        self.ended = True
        out = b""
        for tap in list(self.taps):
            if out:
                out = self._chunk(tap, out)
            try:
                out += tap.end()
            except Exception as e:
                self._failed(tap, e)
        return out

    def _chunk(self, tap: Tap, data: bytes) -> bytes:
        try:
            return tap.chunk(data)
        except Exception as e:
            self._failed(tap, e)
            return data

    def _failed(self, tap: Tap, error: BaseException) -> None:
        if tap in self.taps:
            self.taps.remove(tap)
        log.warning("body tap %s failed; it is left out for the rest of this body: %r", tap.name, error)
        if self.on_error is not None:
            try:
                self.on_error(tap, error)
            except Exception:
                log.exception("reporting a failed body tap failed")
