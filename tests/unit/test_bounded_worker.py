"""BoundedWorker (the access log's file and OTLP threads) gathers a batch over its flush interval instead of being
woken by every offered item: a futex wake and a GIL hand-off per request on the event loop otherwise. A full
batch and `stop()` still wake it at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from egressproxy.bounded_worker import BoundedWorker


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


class Batches:
    def __init__(self) -> None:
        self.seen: list[list[int]] = []
        self.lock = threading.Lock()

    def __call__(self, batch: Sequence[int]) -> int:
        with self.lock:
            self.seen.append(list(batch))
        return 0


def test_items_offered_within_the_flush_interval_are_one_batch() -> None:
    batches = Batches()
    worker: BoundedWorker[int] = BoundedWorker("test", batches, lambda n: None, flush_interval=30.0)
    worker.offer(0)
    wait_until(lambda: worker._batch_waiting > 0)  # the thread took the first item and sleeps out the interval
    for i in range(1, 6):
        worker.offer(i)
    assert batches.seen == []  # none of those offers woke it
    started = time.monotonic()
    worker.stop()
    assert time.monotonic() - started < 5  # stop() wakes it: the 30 s interval is not slept out
    assert batches.seen == [[0, 1, 2, 3, 4, 5]]


def test_a_full_batch_is_delivered_without_waiting_for_the_interval() -> None:
    batches = Batches()
    worker: BoundedWorker[int] = BoundedWorker("test", batches, lambda n: None, batch_size=3, flush_interval=30.0)
    for i in range(3):
        worker.offer(i)
    wait_until(lambda: batches.seen == [[0, 1, 2]])
    worker.stop()


def test_a_lone_item_is_delivered_after_the_flush_interval() -> None:
    batches = Batches()
    worker: BoundedWorker[int] = BoundedWorker("test", batches, lambda n: None, flush_interval=0.05)
    worker.offer(7)
    wait_until(lambda: batches.seen == [[7]])
    worker.stop()
