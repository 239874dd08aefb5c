"""The hand-off between the event loop and a writer thread (the capture store, the OTLP export): bounded in
records and in bytes, never blocking the producer.

Capture documents carry bodies of up to `captureBody.maxBytes` per direction, so a bound in records alone would
let a slow disk or collector hold thousands of large bodies; `offer` refuses an item when either bound would be
passed, and the caller counts the drop. The consumer takes batches: it waits for a first item, then collects
what arrives within `flush_interval`, up to `batch` items.

Within that interval the consumer does not listen: it sleeps it out (woken early only by `stop()` or a full
batch) and then takes what has queued. Waiting on the queue instead would wake the writer thread for every
record, a thread switch and a GIL hand-off per request on the event loop's hot path (docs/performance.md).
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Generic, TypeVar

__all__ = ["RecordQueue", "STOP", "document_weight"]

T = TypeVar("T")

STOP: Any = object()  # put by `stop()`; `take` returns it as the last item of its batch


def document_weight(document: dict[str, Any]) -> int:
    """An estimate of a capture document's size: its body texts plus a fixed allowance for the rest."""
    weight = 1024
    for part in ("request", "response"):
        body = (document.get(part) or {}).get("body")
        if isinstance(body, str):
            weight += len(body)
    return weight


class RecordQueue(Generic[T]):
    def __init__(self, max_items: int, max_bytes: int) -> None:
        self._queue: queue.Queue[tuple[Any, int]] = queue.Queue(maxsize=max_items)
        self.max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self._awake = threading.Event()  # set by `stop()`, or by `offer` once a full batch waits
        self._batch_waiting = 0  # the batch size the sleeping consumer waits for (0: it is not sleeping)
        self._stopping = False

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def offer(self, item: T, weight: int) -> bool:
        """Queue `item` unless a bound would be passed (False: the caller drops and counts it)."""
        with self._lock:
            if self._bytes + weight > self.max_bytes:
                return False
            self._bytes += weight
        try:
            self._queue.put_nowait((item, weight))
        except queue.Full:
            self._release(weight)
            return False
        if self._batch_waiting and self._queue.qsize() >= self._batch_waiting:
            self._awake.set()  # a full batch: the consumer need not sleep out its interval
        return True

    def stop(self, timeout: float) -> None:
        """Ask the consumer to finish (after what is queued); waits at most `timeout` for room."""
        try:
            self._queue.put((STOP, 0), timeout=timeout)
        except queue.Full:
            pass
        self._stopping = True
        self._awake.set()

    def take(self, wait: float | None, flush_interval: float, batch: int) -> list[Any]:
        """Up to `batch` items: the first within `wait` seconds (None: however long), then what arrives within
        `flush_interval`. [] when nothing came; STOP, when taken, is the last item."""
        try:
            items = [self._get(wait)]
        except queue.Empty:
            return []
        if items[-1] is not STOP and batch > 1 and flush_interval > 0:
            self._sleep(flush_interval, batch - 1)
        while len(items) < batch and items[-1] is not STOP:
            try:
                items.append(self._get(0))
            except queue.Empty:
                break
        return items

    def _sleep(self, interval: float, rest: int) -> None:
        """Let the rest of a batch queue up for `interval` without being woken per record."""
        if self._stopping:
            return
        self._batch_waiting = rest
        if self._queue.qsize() < rest:
            self._awake.wait(interval)
        self._batch_waiting = 0
        if not self._stopping:
            self._awake.clear()  # (a late set by `offer` only makes the next batch start early)

    def drain(self) -> int:
        """Discard what is still queued; how many items that was."""
        count = 0
        while True:
            try:
                item = self._get(0)
            except queue.Empty:
                return count
            if item is not STOP:
                count += 1

    def _get(self, wait: float | None) -> Any:
        if wait is None:
            item, weight = self._queue.get()
        elif wait <= 0:
            item, weight = self._queue.get_nowait()
        else:
            item, weight = self._queue.get(timeout=wait)
        self._release(weight)
        return item

    def _release(self, weight: int) -> None:
        with self._lock:
            self._bytes -= weight
