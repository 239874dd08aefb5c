"""A thread that takes items off the event loop through a bounded queue, in batches.

What is slow (a file write, an export to a collector) never runs on the event loop: the loop only offers the
item, which costs a `put_nowait`. When the queue is full the item is dropped and `on_drop` is called (counted by
the caller): a slow disk or a dead collector costs dropped lines, never latency or memory growth.

With a `flush_interval` the thread does not listen on the queue once a batch has begun: it sleeps the interval
out (woken early only by a full batch or `stop()`) and takes what queued meanwhile. Waiting on the queue would
wake the thread for every item, a thread switch and a GIL hand-off per request on the event loop's hot path (the
same fix as egressproxy/record_queue.py's, docs/performance.md).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["BoundedWorker"]

log = logging.getLogger("egressproxy")
T = TypeVar("T")
_STOP = object()


class BoundedWorker(Generic[T]):
    """`handle(batch)` runs in the worker thread for up to `batch_size` items at a time.

    `handle` returns how many items of the batch it could not deliver (counted as drops); it may raise, which
    drops the whole batch. `idle()` runs when the queue has been empty for `idle_interval` seconds."""

    def __init__(
        self,
        name: str,
        handle: Callable[[Sequence[T]], int],
        on_drop: Callable[[int], None],
        capacity: int = 10_000,
        batch_size: int = 512,
        idle: Callable[[], None] | None = None,
        idle_interval: float = 1.0,
        flush_interval: float = 0.0,
    ) -> None:
        self.name = name
        self.handle = handle
        self.on_drop = on_drop
        self.batch_size = batch_size
        self.idle = idle
        self.idle_interval = idle_interval
        self.flush_interval = flush_interval
        self._awake = threading.Event()  # set by `stop()`, or by `offer` once a full batch waits
        self._stopping = False
        self.queue: queue.Queue[object] = queue.Queue(maxsize=capacity)
        self.thread = threading.Thread(target=self._run, name=f"egress-{name}", daemon=True)
        self.thread.start()

    def offer(self, item: T) -> bool:
        """Queue `item` without waiting; False (and a counted drop) when the queue is full."""
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.on_drop(1)
            return False
        if self.flush_interval and self.queue.qsize() >= self.batch_size:
            self._awake.set()  # a full batch: the thread need not sleep out its interval
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (within `timeout`), then end the thread."""
        try:
            self.queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self._stopping = True
        self._awake.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                first = self.queue.get(timeout=self.idle_interval)
            except queue.Empty:
                self._idle()
                continue
            batch: list[T] = []
            stopping = first is _STOP
            if not stopping:
                batch.append(first)  # type: ignore[arg-type]
                self._sleep()
            while not stopping and len(batch) < self.batch_size:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)  # type: ignore[arg-type]
            if batch:
                self._deliver(batch)
            if stopping:
                return

    def _sleep(self) -> None:
        """Let the rest of a batch queue up for `flush_interval` without being woken per item."""
        if not self.flush_interval or self._stopping:
            return
        if self.queue.qsize() < self.batch_size - 1:
            self._awake.wait(self.flush_interval)
        if not self._stopping:
            self._awake.clear()  # (a late set by `offer` only makes the next batch start early)

    def _deliver(self, batch: list[T]) -> None:
        try:
            failed = self.handle(batch)
        except Exception as e:
            log.warning("%s: %d item(s) dropped: %r", self.name, len(batch), e)
            failed = len(batch)
        if failed:
            self.on_drop(failed)

    def _idle(self) -> None:
        if self.idle is not None:
            try:
                self.idle()
            except Exception as e:
                log.warning("%s: %r", self.name, e)
