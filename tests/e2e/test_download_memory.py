"""Freed download buffers go back to the system (egressproxy/runtime/allocator.py, issue 16).

Each chunk of a download is a fresh ~64 KiB `bytes`; glibc kept what they left in its heap, so the gateway's
RSS only ever climbed (112 -> ~150 MiB over 2,000 1 MiB downloads) with Python's own memory flat. Here a real
gateway (captures on, the default, started as loadtest/run.py starts it) carries ten concurrent 1 MiB downloads
from loadtest/streams.py's origin process for a few seconds; once they end, its RSS must fall below the peak
within a few trim intervals. Without the trim (EGRESSPROXY_MALLOC_TUNING=off) it stays at the peak (0-2.7 MiB
lower in every measured run; 9.6-13.3 MiB with it over this test; docs/streams-memory.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
GIVEN_BACK_MIB = 6.0  # measured: 9.6-13.3 MiB given back with the trim, 0-2.7 without
SETTLE_SECONDS = 8.0  # four trim intervals (allocator.TRIM_INTERVAL)


@pytest.fixture(scope="module")
def streams() -> Iterator[Any]:
    sys.path.insert(0, str(REPO / "loadtest"))
    import streams as module

    yield module
    module.run.stop_all()


def lowest_rss_mib(streams: Any, pid: int, below: float) -> float:
    """Wait (up to SETTLE_SECONDS) for the RSS of `pid` to fall to `below` MiB; the lowest seen."""
    lowest = streams.rss_kib(pid) / 1024
    deadline = time.monotonic() + SETTLE_SECONDS
    while lowest > below and time.monotonic() < deadline:
        time.sleep(0.2)
        lowest = min(lowest, streams.rss_kib(pid) / 1024)
    return lowest


@pytest.mark.timeout(120)
def test_the_memory_downloads_used_is_given_back(streams: Any, tmp_path: Path) -> None:
    origin = streams.start_origin(tmp_path)
    target = streams.start_target("egressproxy-capture", tmp_path, origin)
    args = argparse.Namespace(duration=3.0, clients=10, size=streams.MIB)
    d = asyncio.run(streams.downloads_once(target, "plain", origin, args))
    assert d.errors == 0 and d.bodies >= 50, d
    end = streams.rss_kib(target.pid) / 1024
    peak = max(d.peak_rss_mib, end)
    after = lowest_rss_mib(streams, target.pid, below=peak - GIVEN_BACK_MIB)
    assert after <= peak - GIVEN_BACK_MIB, f"RSS peak {peak:.1f} MiB, {after:.1f} MiB after {d.bodies} downloads"
