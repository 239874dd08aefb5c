"""Work the client need not wait for, run once the response is written (issue 16).

mitmproxy fires the `response` hook (and `error`) BEFORE it writes the response to the client. Each hook runs in
a task of its own (`ConnectionHandler.hook_task`, started eagerly: the addons run at once, inside the event that
asked for the hook); when they have returned, the task feeds `HookCompleted` back through `server_event`, which
resumes the layer and writes what it sends. That `server_event` first waits for the connection's event lock,
held by the event that started the hook, so the write comes a loop turn or more after the hook returned: a plain
`call_soon` would still run before it. Whatever the hook does, or queues for the next turn, the client waits for.

Finishing a request's record (building it, redacting its headers, handing it to the sinks: metrics, access log,
capture store, tracing) is not needed for the answer, so the hook `defer`s it, tied to the hook's task
(`after`, found by `egressproxy.engine.mitmproxy_boundary.current_hook_task`): it runs when that task has ended,
which is after the write. Without such a task it runs on the loop's next turn.

Nothing is lost: `flush()` runs whatever is still pending, in the order it was deferred (graceful stop calls it
before the sinks stop, and so does the `done` hook of the addon that defers); outside a running loop `defer`
runs the work inline.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["DeferredWork"]

log = logging.getLogger("egressproxy")

Work = Callable[[], None]


class DeferredWork:
    """Callables run each after the task it waits for has ended (else on the loop's next turn), or at `flush`."""

    def __init__(self) -> None:
        self._pending: dict[int, Work] = {}  # in the order deferred; a piece is run once, by whoever comes first
        self._keys = itertools.count()
        self.ran = 0

    def __len__(self) -> int:
        return len(self._pending)

    def defer(self, work: Work, after: "asyncio.Future[Any] | None" = None) -> None:
        """Run `work` once `after` (a task whose end follows the response's write) is done; without it, once the
        current callback has returned."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a tool, a unit test): nothing to get out of the way of
            self._run(work)
            return
        key = next(self._keys)
        self._pending[key] = work
        if after is not None and not after.done():
            after.add_done_callback(lambda _: self._run_pending(key))
        else:
            loop.call_soon(self._run_pending, key)

    def flush(self) -> int:
        """Run everything still pending now, in order (graceful stop, shutdown); how many ran."""
        ran = 0
        while self._pending:
            key = next(iter(self._pending))
            self._run(self._pending.pop(key))
            ran += 1
        return ran

    def _run_pending(self, key: int) -> None:
        work = self._pending.pop(key, None)
        if work is not None:  # else flushed already
            self._run(work)

    def _run(self, work: Work) -> None:
        self.ran += 1
        try:
            work()
        except Exception as e:  # one failed finishing must not cost the others theirs
            # The type only: the text of an error met while building a record could quote a header or a URL.
            log.error("deferred finishing failed: %s", type(e).__name__)
