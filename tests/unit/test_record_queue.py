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
