"""The access-log sink (egressproxy/access_log.py): lines written off the loop, rotation followed, drops counted."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from egressproxy import access_log
from egressproxy.access_log import AccessLog, FileLines
from egressproxy.access_log_format import DEFAULT_JSON_FORMAT, compile_json_format
from egressproxy.bounded_worker import BoundedWorker
from egressproxy.metrics import GatewayMetrics
from egressproxy.observability_settings import AccessLogs, AccessLogSink
from tests.unit.test_sinks import request

FORMAT = compile_json_format({"path": "%REQ(:PATH)%", "code": "%RESPONSE_CODE%", "host": "%REQ(:AUTHORITY)%"})


def snapshot_with(sinks: tuple[AccessLogSink, ...]) -> Any:
    logs = AccessLogs("HTTPListenerPolicy/default/logs", sinks)
    return SimpleNamespace(compiled=SimpleNamespace(access_logs_for=lambda listener: logs if listener == "https" else None))


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_each_finished_request_of_the_listener_is_one_json_line(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_text('{"earlier": true}\n')  # append mode: what was there stays
    sink = AccessLog(lambda: snapshot_with((AccessLogSink(FORMAT, path=str(path)),)), GatewayMetrics())
    sink.request_finished(request(status=200))
    sink.request_finished(request(status=403, decision="deny"))
    sink.request_finished(request(listener="other"))  # no access log on that listener
    sink.stop()
    assert lines(path) == [{"earlier": True}, {"path": None, "code": 200, "host": "api.example.test"},
                           {"path": None, "code": 403, "host": "api.example.test"}]


def test_a_file_rotated_away_is_reopened_at_its_path(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(access_log, "ROTATION_CHECK", 0.0)
    path = tmp_path / "access.log"
    sink = AccessLog(lambda: snapshot_with((AccessLogSink(FORMAT, path=str(path)),)), GatewayMetrics())
    sink.request_finished(request(status=201))
    wait_for(lambda: len(lines(path)) == 1, "the first line")
    path.rename(tmp_path / "access.log.1")  # logrotate's rename
    sink.request_finished(request(status=202))
    wait_for(lambda: len(lines(path)) == 1, "a line in the new file")
    sink.stop()
    assert [l["code"] for l in lines(tmp_path / "access.log.1")] == [201]
    assert [l["code"] for l in lines(path)] == [202]


def test_reopen_closes_the_files_before_the_next_write(tmp_path: Path) -> None:
    writer = FileLines()
    path = tmp_path / "a.log"
    item = (AccessLogSink(FORMAT, path=str(path)), request())
    writer.write([item])
    fd = writer.files[str(path)]
    writer.reopen_requested = True
    writer.write([item])
    assert writer.files[str(path)] is not None and len(lines(path)) == 2
    writer.close()
    assert writer.files == {} and fd >= 0


def test_an_unwritable_path_drops_lines_and_counts_them(tmp_path: Path) -> None:
    metrics = GatewayMetrics()
    path = tmp_path / "missing-dir" / "access.log"
    sink = AccessLog(lambda: snapshot_with((AccessLogSink(FORMAT, path=str(path)),)), metrics)
    sink.request_finished(request())
    sink.request_finished(request())
    sink.stop()
    assert metrics.registry.get_sample_value("egress_access_log_drops_total", {"sink": "file"}) == 2


def test_a_full_queue_drops_instead_of_waiting() -> None:
    release = threading.Event()
    dropped: list[int] = []

    def slow(batch: Any) -> int:
        release.wait(5)
        return 0

    worker: BoundedWorker[int] = BoundedWorker("test", slow, dropped.append, capacity=2, batch_size=1)
    started = time.monotonic()
    results = [worker.offer(i) for i in range(10)]  # one taken by the thread, two queued, the rest dropped
    assert time.monotonic() - started < 0.5  # never waited on the stuck handler
    assert results.count(False) >= 7 and sum(dropped) == results.count(False)
    release.set()
    worker.stop()


def test_items_offered_within_the_flush_interval_are_one_batch() -> None:
    """The writer thread is not woken for every line: what arrives within the interval is handled together."""
    batches: list[list[int]] = []
    worker: BoundedWorker[int] = BoundedWorker("test", lambda b: batches.append(list(b)) or 0, print, flush_interval=0.5)
    for i in range(5):
        worker.offer(i)
    wait_for(lambda: sum(map(len, batches)) == 5, "the five items")
    assert batches == [[0, 1, 2, 3, 4]]
    worker.stop()


def test_stop_and_a_full_batch_cut_the_flush_interval_short() -> None:
    batches: list[list[int]] = []
    worker: BoundedWorker[int] = BoundedWorker(
        "test", lambda b: batches.append(list(b)) or 0, print, batch_size=3, flush_interval=30.0
    )
    started = time.monotonic()
    for i in range(3):
        worker.offer(i)
    wait_for(lambda: batches == [[0, 1, 2]], "a full batch before the interval")
    worker.offer(3)
    worker.stop()
    assert batches == [[0, 1, 2], [3]] and time.monotonic() - started < 10


def test_a_secret_header_never_reaches_the_file(tmp_path: Path) -> None:
    from egressproxy.flowrecord import Exchange

    path = tmp_path / "access.log"
    fmt = compile_json_format({**DEFAULT_JSON_FORMAT, "auth": "%REQ(authorization)%", "proxy": "%REQ(proxy-authorization)%"})
    sink = AccessLog(lambda: snapshot_with((AccessLogSink(fmt, path=str(path)),)), GatewayMetrics())
    headers = ((b"authorization", b"Bearer sk-live-123"), (b"proxy-authorization", b"Basic c2VjcmV0"))
    sink.request_finished(request(exchange=Exchange(request_headers=headers)))
    sink.stop()
    text = path.read_text()
    assert "sk-live-123" not in text and "c2VjcmV0" not in text and os.path.getsize(path) > 0
