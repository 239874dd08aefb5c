"""Capture under faults that must never reach traffic: a collector that is down for thousands of requests (memory
stays flat: the export queue is bounded and a failed batch is dropped, not kept), and a data dir on a disk that
fills up for real (a small tmpfs: SQLite's SQLITE_FULL becomes counted drops and one log line)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_captures import PLAIN_GATEWAY, metric, wait_until
from tests.support.gateway import GatewayProcess, free_port

pytestmark = pytest.mark.e2e

BODY = b'{"prompt": "' + b"x" * 16000 + b'"}'  # captured: application/json, under the 64 KiB cap


def rss_mib(gw: GatewayProcess) -> float:
    assert gw.proc is not None
    for line in Path(f"/proc/{gw.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def post_many(gw: GatewayProcess, port: int, count: int) -> None:
    with httpx.Client(proxy=gw.proxy_url, timeout=10) as client:
        for i in range(count):
            r = client.post(f"http://api.example.test:{port}/p{i}", content=BODY, headers={"content-type": "application/json"})
            assert r.status_code == 200


@pytest.mark.timeout(300)
def test_a_collector_down_for_thousands_of_requests_keeps_memory_flat(gateway, plain_origin) -> None:
    """Memory reaches a plateau: the export queue is bounded, failed batches are dropped and counted, and the
    third round of requests adds (almost) nothing to what the second left."""
    origin = plain_origin()
    gw = gateway(PLAIN_GATEWAY.format(otlp=f"otlp: {{endpoint: 'http://127.0.0.1:{free_port()}'}}"))
    samples = []
    for _ in range(3):
        post_many(gw, origin.port, 500)  # 8 MB of captured bodies each round, none of it exported
        samples.append(rss_mib(gw))
    print(f"RSS after 500/1000/1500 requests: {samples} MiB")
    assert samples[2] - samples[0] < 20, f"RSS still growing while the collector is down: {samples} MiB"
    assert metric(gw, "egress_capture_drops_total", sink="otlp", reason="export-failed") >= 1000


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount a 2 MiB tmpfs where the gateway's data dir will be (root only); unmounted after the gateway stops."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real full disk needs root to mount a small tmpfs")
    mounted: list[Path] = []

    def mount(name: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.timeout(300)
def test_a_full_disk_drops_captures_with_a_metric_and_one_log_line_never_traffic(small_disk, gateway, plain_origin) -> None:
    origin = plain_origin()
    small_disk("data-0")  # the first gateway's --data-dir (tests/conftest.py)
    gw = gateway(PLAIN_GATEWAY.format(otlp=""))
    post_many(gw, origin.port, 300)  # ~5 MB of bodies into 2 MiB: every request still answered
    wait_until(lambda: metric(gw, "egress_capture_drops_total", sink="store", reason="store-error") >= 1, 30)
    # One line per incident, not one per record. Retention can free room for a batch between failures, so an
    # incident may end ("writable again") and a new one begin: each start is logged once, each end once.
    logs = gw.logs()
    failures, recoveries = logs.count("cannot be written"), logs.count("writable again")
    assert failures >= 1 and failures - recoveries in (0, 1), logs
    with httpx.Client(proxy=gw.proxy_url, timeout=10) as client:  # and the gateway keeps serving
        assert client.get(f"http://api.example.test:{origin.port}/after").status_code == 200
