"""What a running process holds, read from /proc: open file descriptors and resident memory (for the soak)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

__all__ = ["ProcessSample", "sample", "wait_for_fds"]


@dataclass(frozen=True)
class ProcessSample:
    at: float  # time.monotonic() when taken
    fds: int
    rss_kib: int

    def __str__(self) -> str:
        return f"fds={self.fds} rss={self.rss_kib / 1024:.1f}MiB"


def sample(pid: int) -> ProcessSample:
    """The fd count (`/proc/PID/fd`) and VmRSS (`/proc/PID/status`) of `pid` now."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
    return ProcessSample(time.monotonic(), fds, rss)


def wait_for_fds(pid: int, at_most: int, timeout: float) -> ProcessSample:
    """Wait until `pid` holds at most `at_most` fds; the last sample either way (the caller asserts)."""
    deadline = time.monotonic() + timeout
    current = sample(pid)
    while current.fds > at_most and time.monotonic() < deadline:
        time.sleep(0.2)
        current = sample(pid)
    return current
