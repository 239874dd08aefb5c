"""Work the client need not wait for, run on the event loop's next turn: after the response is written (issue 16).

mitmproxy fires the `response` hook (and `error`) BEFORE it writes the response to the client: the hook runs in
the connection's hook task, and only when every addon has returned does that task resume the layer, whose
`SendData` commands go to the transport in the same synchronous run (`ConnectionHandler.server_event`). Whatever
the hook does, the client waits for. Finishing a request's record (building it, redacting its headers, handing
it to the sinks: metrics, access log, capture store, tracing) is not needed for the answer, so the hook only
`defer`s it: the work is queued and one `loop.call_soon` drains the queue. A `call_soon` callback runs only once
the current callback (the hook task's step, which goes on to write the response) has returned, so the response
bytes are with the transport before any finishing runs. Many responses of one loop turn share one drain.

Nothing is lost: `flush()` runs whatever is queued at once (graceful stop calls it before the sinks stop, and the
`done` hook of the addon that defers); outside a running loop `defer` runs the work inline.

The ordering holds while the response hooks do not suspend (no addon awaits in `response`/`error` today): a hook
that did would let the drain run before the write, which costs latency, never a record.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

__all__ = ["DeferredWork"]

log = logging.getLogger("egressproxy")

Work = Callable[[], None]


class DeferredWork:
    """A queue of callables drained on the loop's next turn, in the order they were deferred."""

    def __init__(self) -> None:
        self._queue: deque[Work] = deque()
        self._scheduled = False
        self.ran = 0  # how many were run (tests, /stats)

    def __len__(self) -> int:
        return len(self._queue)

    def defer(self, work: Work) -> None:
        """Run `work` once the current callback (a hook task's step, and the write that follows it) has returned."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a tool, a unit test): nothing to get out of the way of
            self._run(work)
            return
        self._queue.append(work)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._drain)

    def flush(self) -> int:
        """Run everything queued now (graceful stop, shutdown); how many ran."""
        ran = 0
        while self._queue:
            self._run(self._queue.popleft())
            ran += 1
        return ran

    def _drain(self) -> None:
        self._scheduled = False
        self.flush()

    def _run(self, work: Work) -> None:
        self.ran += 1
        try:
            work()
        except Exception:  # one failed finishing must not cost the others theirs
            log.exception("deferred finishing failed")
