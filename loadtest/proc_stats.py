"""What a proxy process tree costs, read from /proc: CPU ticks, resident memory, and the per-request arithmetic.

- CPU: utime + stime of every process of the tree (`/proc/PID/stat`), read at the window's start and end;
  `cpu_ms_per_1k` turns the difference into CPU milliseconds per 1,000 requests.
- Memory: `PeakRss` samples the sum of `VmRSS` over the tree every 100 ms while a run goes on and keeps the
  largest sum. Pages shared between processes (forked workers, squid's helpers) count once per process, as `ps`
  shows them: for a multi-process proxy the sum overstates what the machine spends.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable

__all__ = ["PeakRss", "cpu_ms_per_1k", "descendants", "parse_vm_rss_kib", "proc_cpu_ticks", "tree_rss_kib"]

SAMPLE_INTERVAL = 0.1


def proc_cpu_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads), in clock ticks; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def descendants(root: int) -> list[int]:
    """`root` and every live process below it (gateway workers, squid's certificate helpers)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [root]
    while todo and len(out) < 10_000:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def cpu_ms_per_1k(cpu_ticks: int, clk_tck: int, requests: int) -> float:
    """CPU milliseconds per 1,000 requests: ticks / clk_tck seconds, over requests, times 1,000 requests, in ms.
    0.0 when no request completed (the row then shows errors, not a cost)."""
    if requests <= 0 or clk_tck <= 0:
        return 0.0
    return cpu_ticks / clk_tck * 1000.0 / requests * 1000.0


def parse_vm_rss_kib(status: str) -> int:
    """The `VmRSS:` of a /proc/PID/status text, in KiB; 0 when absent (a kernel thread, a zombie)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
    return 0


def _read_status(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return f.read()
    except OSError:
        return ""


def tree_rss_kib(pids: Iterable[int], read_status: Callable[[int], str] = _read_status) -> int:
    """The sum of VmRSS over `pids`, in KiB (a process that is gone counts 0)."""
    return sum(parse_vm_rss_kib(read_status(pid)) for pid in pids)


class PeakRss:
    """The largest tree RSS seen while it runs: a daemon thread sampling every `interval` seconds, between
    `start()` and `stop()` (which returns the peak in KiB). The tree is re-read every `rescan` samples, so a
    helper that starts during the run counts too."""

    def __init__(self, root: int, interval: float = SAMPLE_INTERVAL, rescan: int = 10,
                 sample: Callable[[Iterable[int]], int] = tree_rss_kib) -> None:
        self.root, self.interval, self.rescan, self._sample = root, interval, rescan, sample
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def start(self) -> PeakRss:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak_kib

    def _run(self) -> None:
        pids: list[int] = []
        n = 0
        while True:
            if n % self.rescan == 0:
                pids = descendants(self.root)
            self.peak_kib = max(self.peak_kib, self._sample(pids))
            n += 1
            if self._stop.wait(self.interval):
                return
