"""loadtest/streams.py end to end, as a regression check on streams and memory (issue 16):

- an SSE event passes through the gateway as it is sent (the origin sends a second event 500 ms after the first
  and ends 500 ms later: a buffering proxy, like bare mitmdump, hands over the first event only at the end);
- 300 idle intercepted SSE streams held open cost the gateway well under 160 KiB of RSS each. 134 KiB was
  measured with OpenSSL's idle buffers given back (egressproxy/engine/tls_buffers.py), 180 KiB without, over
  1,000 streams; the bound sits between the two, above the noise of 300 streams.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ORIGIN_DELAY_MS = 100
PER_STREAM_BOUND_KIB = 160


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("streams") / "result.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "loadtest" / "streams.py"), "--parts", "sse,idle", "--proxies",
         "direct,egressproxy", "--schemes", "https", "--kinds", "sse", "--streams", "300", "--sse-samples", "3",
         "--sse-first", str(ORIGIN_DELAY_MS), "--json", str(out)],
        capture_output=True, text=True, timeout=170, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(out.read_text()))


@pytest.mark.timeout(200)
def test_the_first_sse_event_arrives_as_sent_not_at_the_end_of_the_stream(result: dict) -> None:
    by = {row["proxy"]: row for row in result["sse"]}
    direct = statistics.median(by["direct"]["first_event_ms"])
    gateway = statistics.median(by["egressproxy"]["first_event_ms"])
    assert direct >= ORIGIN_DELAY_MS and gateway >= ORIGIN_DELAY_MS, result["sse"]
    # The next event comes 500 ms later: an event held until then (or until the end) fails this by far.
    assert gateway < direct + 250, result["sse"]


@pytest.mark.timeout(200)
def test_an_idle_intercepted_sse_stream_costs_the_gateway_under_the_bound(result: dict) -> None:
    (idle,) = [row for row in result["idle"] if row["target"] == "egressproxy"]
    assert idle["kind"] == "sse" and idle["scheme"] == "https"
    assert idle["held"] == 300 and idle["failed"] == 0, idle
    assert 0 < idle["per_kib"] < PER_STREAM_BOUND_KIB, idle
