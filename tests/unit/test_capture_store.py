"""egressproxy/capture_store.py and capture_query.py: batched writes off the caller's thread, drops that are
counted instead of waited for, one log line per incident, retention by age and size, and the reader's filters."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from egressproxy.capture_metrics import CaptureMetrics
from egressproxy.capture_query import CaptureFilter, FilterError, latest_id, parse_since, parse_status, select
from egressproxy.capture_store import CaptureStore, _row, open_reader


def doc(host: str = "api.example.test", status: int | None = 200, ns: str = "team-a", route: str = "default/api",
        pad: int = 0) -> dict[str, Any]:
    return {"kind": "request", "host": host, "status": status, "route": route, "url": f"https://{host}/",
            "identity": {"namespace": ns, "serviceAccount": "agent"}, "pad": "x" * pad}


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def wait_until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def rows(path: Path, flt: CaptureFilter | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    db = open_reader(path)
    try:
        return select(db, flt or CaptureFilter(), limit)
    finally:
        db.close()


def test_records_are_written_in_wal_mode_and_read_back_in_order(tmp_path: Path, registry: CollectorRegistry) -> None:
    store = CaptureStore(tmp_path / "captures.db", CaptureMetrics(registry), flush_interval=0.01).start()
    for i in range(5):
        store.put(time.time(), doc(host=f"h{i}.example.test"))
    store.close()
    records = rows(tmp_path / "captures.db")
    assert [r["host"] for r in records] == [f"h{i}.example.test" for i in range(5)]
    assert [r["id"] for r in records] == sorted(r["id"] for r in records) and list(records[0])[0] == "id"
    assert value(registry, "egress_capture_records_total", sink="store") == 5
    db = sqlite3.connect(tmp_path / "captures.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path: Path, registry: CollectorRegistry) -> None:
    store = CaptureStore(tmp_path / "captures.db", CaptureMetrics(registry), queue_size=3)  # writer not started
    started = time.monotonic()
    for _ in range(10):
        store.put(time.time(), doc())
    assert time.monotonic() - started < 0.5
    assert value(registry, "egress_capture_drops_total", sink="store", reason="queue-full") == 7


def test_an_unwritable_store_drops_counts_and_logs_once_per_incident(
    tmp_path: Path, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "captures.db"
    path.mkdir()  # SQLite cannot open a directory
    store = CaptureStore(path, CaptureMetrics(registry), flush_interval=0.01).start()
    with caplog.at_level(logging.WARNING, logger="egressproxy"):
        for _ in range(3):
            store.put(time.time(), doc())
            wait_until(lambda: store._queue.pending_bytes == 0)
        wait_until(lambda: value(registry, "egress_capture_drops_total", sink="store", reason="store-error") == 3)
        path.rmdir()  # the disk has room again: the next batch is written, and the log says so
        store.put(time.time(), doc())
        store.close()
    assert sum("cannot be written" in r.getMessage() for r in caplog.records) == 1
    assert sum("writable again" in r.getMessage() for r in caplog.records) == 1
    assert len(rows(path)) == 1


def test_records_older_than_the_age_limit_are_deleted(tmp_path: Path, registry: CollectorRegistry) -> None:
    store = CaptureStore(tmp_path / "captures.db", CaptureMetrics(registry), max_age=3600, flush_interval=0.01)
    store.start()
    store.put(time.time() - 7200, doc(host="old.example.test"))
    store.put(time.time(), doc(host="new.example.test"))
    store.close()  # the writer checks retention after its last batch
    assert [r["host"] for r in rows(tmp_path / "captures.db")] == ["new.example.test"]


def test_the_oldest_records_go_when_the_store_is_over_its_size(tmp_path: Path, registry: CollectorRegistry) -> None:
    path = tmp_path / "captures.db"
    store = CaptureStore(path, CaptureMetrics(registry), max_bytes=200_000, flush_interval=0.01).start()
    for i in range(100):
        store.put(time.time(), doc(host=f"h{i}.example.test", pad=10_000))  # ~1 MB in all
    store.close()
    left = rows(path)
    assert 0 < len(left) < 100
    assert left[-1]["host"] == "h99.example.test"  # the newest stay
    db = sqlite3.connect(path)
    pages = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
    assert pages <= 400_000  # freed pages went back to the file system


def test_two_writers_share_one_database(tmp_path: Path, registry: CollectorRegistry) -> None:
    """--workers N: one writer per process on the same WAL database; ids stay unique."""
    path = tmp_path / "captures.db"
    a = CaptureStore(path, CaptureMetrics(registry), flush_interval=0.001).start()
    b = CaptureStore(path, CaptureMetrics(CollectorRegistry()), flush_interval=0.001).start()
    for i in range(200):
        (a if i % 2 else b).put(time.time(), doc(host=f"h{i}.example.test"))
    a.close()
    b.close()
    ids = [r["id"] for r in rows(path)]
    assert len(ids) == 200 and len(set(ids)) == 200


def test_filters(tmp_path: Path, registry: CollectorRegistry) -> None:
    path = tmp_path / "captures.db"
    store = CaptureStore(path, CaptureMetrics(registry), flush_interval=0.01).start()
    now = time.time()
    store.put(now - 7200, doc(host="a.example.test", status=200, ns="team-a"))
    store.put(now, doc(host="b.example.test", status=503, ns="team-b", route="default/b"))
    store.put(now, doc(host="a.example.test", status=404, ns="team-a"))
    store.close()
    hosts = lambda flt, limit=100: [r["host"] for r in rows(path, flt, limit)]  # noqa: E731
    assert hosts(CaptureFilter.parse(host="A.example.test.")) == ["a.example.test", "a.example.test"]
    assert hosts(CaptureFilter.parse(since="1h")) == ["b.example.test", "a.example.test"]
    assert hosts(CaptureFilter.parse(identity="team-b/agent")) == ["b.example.test"]
    assert hosts(CaptureFilter.parse(route="default/b")) == ["b.example.test"]
    assert hosts(CaptureFilter.parse(status="5xx")) == ["b.example.test"]
    assert hosts(CaptureFilter.parse(status="404")) == ["a.example.test"]
    assert hosts(CaptureFilter(), limit=1) == ["a.example.test"]  # the newest one
    db = open_reader(path)
    assert latest_id(db) == 3
    assert [r["id"] for r in select(db, CaptureFilter(after_id=2), 10)] == [3]


def test_since_takes_durations_and_rfc3339() -> None:
    assert parse_since("15m", now=10_000) == 9_100
    assert parse_since("2d", now=200_000) == 200_000 - 172_800
    assert parse_since("2026-12-06T05:00:00Z") == 1796533200.0
    assert parse_since("2026-12-06T06:00:00+01:00") == 1796533200.0


@pytest.mark.parametrize("text", ["yesterday", "2026-12-06T05:00:00", "-"])
def test_a_since_that_is_neither_is_an_error(text: str) -> None:
    with pytest.raises(FilterError):
        parse_since(text)


@pytest.mark.parametrize(("text", "expected"), [("404", (404, 404)), ("5xx", (500, 599)), ("2XX", (200, 299))])
def test_status_filters(text: str, expected: tuple[int, int]) -> None:
    assert parse_status(text) == expected


@pytest.mark.parametrize("text", ["42", "6xx", "ok"])
def test_bad_status_filters(text: str) -> None:
    with pytest.raises(FilterError):
        parse_status(text)


def test_identity_needs_both_parts() -> None:
    with pytest.raises(FilterError):
        CaptureFilter.parse(identity="team-a")


def test_the_queue_is_bounded_in_body_bytes_too(tmp_path: Path, registry: CollectorRegistry) -> None:
    """A slow disk cannot make the queue hold thousands of large bodies."""
    store = CaptureStore(tmp_path / "captures.db", CaptureMetrics(registry), queue_bytes=10_000)  # not started
    big = {**doc(), "request": {"body": "x" * 5000}}
    for _ in range(3):
        store.put(time.time(), big)
    assert value(registry, "egress_capture_drops_total", sink="store", reason="queue-full") == 2


def test_a_pending_document_is_built_by_the_writer_and_stored(tmp_path: Path, registry: CollectorRegistry) -> None:
    """The capture sink queues the finished record; the writer thread builds its document (capture_records)."""
    from egressproxy.capture_records import PendingDocument, request_document
    from egressproxy.capture_sink import CaptureSink
    from egressproxy.flowrecord import FinishedRequest, Identity, Verdict

    record = FinishedRequest(
        gateway="default/eg", listener="https", route="default/api", backend=None, identity=Identity("team-a", "sa"),
        verdict=Verdict.allow(), decision="allow", error=None, host="pending.example.test", sni=None,
        method="GET", url="https://pending.example.test/", status=200, started=time.time(), duration=0.01,
    )
    store = CaptureStore(tmp_path / "captures.db", CaptureMetrics(registry), flush_interval=0.01)
    queued: list[Any] = []
    real_put = store.put
    store.put = lambda ts, document: (queued.append(document), real_put(ts, document))  # type: ignore[method-assign]
    store.start()
    CaptureSink(lambda: None, store).request_finished(record)
    store.close()
    assert len(queued) == 1 and isinstance(queued[0], PendingDocument)
    [row] = rows(tmp_path / "captures.db")
    assert {k: v for k, v in row.items() if k != "id"} == request_document(record)


def test_a_stored_document_is_compact_json_of_the_document() -> None:
    """The shared encoder writes what `json.dumps(doc, separators=(",", ":"))` wrote: `captures` reads the same."""
    doc = {"kind": "request", "host": "h\u00e9", "status": 200, "durationMs": 1.25, "identity": {"namespace": "n"},
           "request": {"headers": {"x": "\u2603"}, "body": None}}
    row = _row(5.0, doc)
    assert row[-1] == json.dumps(doc, separators=(",", ":"))
    assert json.loads(row[-1]) == doc
    assert row[:-1] == (5.0, "request", "h\u00e9", "n", None, None, 200)
