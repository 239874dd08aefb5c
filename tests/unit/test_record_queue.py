"""egressproxy/record_queue.py: bounded in records and in bytes, never blocking the producer; batches out."""

from __future__ import annotations

import threading
import time

from egressproxy.record_queue import STOP, RecordQueue, document_weight


def test_the_byte_bound_refuses_what_would_pass_it_and_frees_on_take() -> None:
    q: RecordQueue[str] = RecordQueue(max_items=100, max_bytes=3000)
    assert q.offer("a", 1000) and q.offer("b", 1500)
    assert not q.offer("c", 1000)  # 3500 > 3000
    assert q.pending_bytes == 2500
    assert q.take(0, 0, 1) == ["a"]
    assert q.offer("c", 1000) and q.pending_bytes == 2500


def test_the_item_bound_refuses_and_keeps_the_byte_count_right() -> None:
    q: RecordQueue[int] = RecordQueue(max_items=2, max_bytes=10**9)
    assert q.offer(1, 10) and q.offer(2, 10) and not q.offer(3, 10)
    assert q.pending_bytes == 20


def test_take_batches_what_arrives_within_the_flush_interval_and_ends_at_stop() -> None:
    q: RecordQueue[int] = RecordQueue(100, 10**6)
    for i in range(5):
        q.offer(i, 1)
    assert q.take(None, 0.01, 3) == [0, 1, 2]
    q.stop(1)
    assert q.take(None, 0.01, 10) == [3, 4, STOP]
    assert q.take(0.01, 0.01, 10) == []  # nothing within the wait


def test_a_consumer_waiting_gets_the_first_item_at_once() -> None:
    q: RecordQueue[str] = RecordQueue(10, 10**6)
    threading.Timer(0.05, lambda: q.offer("late", 1)).start()
    started = time.monotonic()
    assert q.take(5, 0, 1) == ["late"]
    assert time.monotonic() - started < 2


def test_drain_counts_what_was_left() -> None:
    q: RecordQueue[int] = RecordQueue(10, 10**6)
    q.offer(1, 5)
    q.offer(2, 5)
    q.stop(1)
    assert q.drain() == 2 and q.pending_bytes == 0


def test_a_document_weighs_its_bodies() -> None:
    doc = {"request": {"body": "x" * 5000}, "response": {"body": None}}
    assert document_weight(doc) == 1024 + 5000


def _blocking_gets(q: RecordQueue[int]) -> list[float]:
    """Record each blocking `get` of the queue's consumer: one per time the writer thread waits to be woken."""
    waits: list[float] = []
    inner = q._queue.get

    def get(block: bool = True, timeout: float | None = None) -> object:
        if block and timeout != 0:
            waits.append(time.monotonic())
        return inner(block, timeout)

    q._queue.get = get  # type: ignore[method-assign]
    return waits


def test_the_consumer_is_not_woken_for_every_record_within_the_interval() -> None:
    """Records arriving one by one during the flush interval are taken as one batch after it, and the consumer
    waited once (for the first), not once per record: no thread switch per request on the event loop."""
    q: RecordQueue[int] = RecordQueue(1000, 10**6)
    waits = _blocking_gets(q)

    def produce() -> None:
        for i in range(20):
            q.offer(i, 1)
            time.sleep(0.005)

    producer = threading.Thread(target=produce)
    producer.start()
    batch = q.take(None, 0.5, 100)
    producer.join()
    assert batch == list(range(20))
    assert len(waits) == 1


def test_a_full_batch_or_stop_ends_the_interval_early() -> None:
    q: RecordQueue[int] = RecordQueue(1000, 10**6)
    threading.Timer(0.05, lambda: [q.offer(i, 1) for i in range(1, 10)]).start()
    q.offer(0, 1)
    started = time.monotonic()
    assert q.take(None, 30, 10) == list(range(10))
    threading.Timer(0.05, lambda: q.stop(1)).start()
    q.offer(10, 1)
    assert q.take(None, 30, 10) == [10, STOP]
    assert time.monotonic() - started < 10
