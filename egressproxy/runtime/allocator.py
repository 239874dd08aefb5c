"""glibc malloc made to give freed read buffers back to the system (issue 16, docs/streams-memory.md).

A download moves through the gateway in reads of up to 64 KiB: every chunk is a fresh `bytes` just over
64 KiB, freed a moment later. glibc serves those from its heap (its mmap threshold rises past them after the
first one freed), and the heap keeps what they leave behind, fragmented between longer-lived blocks where
trimming the top of the heap cannot return it. Measured: RSS climbed 112 -> ~150 MiB over 2,000 1 MiB
downloads while Python's traced memory stayed flat.

Two remedies, chosen by measurement:

- `malloc_trim(0)` every TRIM_INTERVAL seconds, in a helper thread, off the hot path: since glibc 2.8 it also
  returns the whole free pages inside the heap (madvise), not only its top. It costs a walk of malloc's free
  lists and the madvise calls (~1 ms, up to ~18 ms after a burst) and a page fault per page reused afterwards.
- `M_ARENA_MAX` at start-up bounds the per-thread arenas (glibc allows 8 per core) that the capture writer,
  the sinks and `asyncio.to_thread` workers would each fill and keep.

Not taken: a fixed `M_MMAP_THRESHOLD` of 64 KiB (each read buffer its own mmap) returned the memory too, but
halved intercepted download throughput (a mmap, munmap and 16 page faults per read).

`MALLOC_ARENA_MAX` set in the environment (glibc's own variable) is left as the operator set it;
`EGRESSPROXY_MALLOC_TUNING=off` turns all of this off (to measure the difference). On another C library (musl,
macOS) it is a no-op, logged at debug.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ARENA_MAX", "OFF_VARIABLE", "TRIM_INTERVAL", "Malloc", "glibc_malloc", "trim_forever", "tune_allocator"]

log = logging.getLogger("egressproxy")

ARENA_MAX = 2  # the event loop's thread and one shared by the helper threads
ARENA_MAX_VARIABLE = "MALLOC_ARENA_MAX"
OFF_VARIABLE = "EGRESSPROXY_MALLOC_TUNING"
TRIM_INTERVAL = 2.0  # seconds: what downloads left behind is back within this

_M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h


class Malloc(Protocol):
    """The two glibc calls used (a fake in the unit tests)."""

    def mallopt(self, param: int, value: int) -> int: ...

    def malloc_trim(self, pad: int) -> int: ...


@dataclass(frozen=True, slots=True)
class _Glibc:
    lib: ctypes.CDLL

    def mallopt(self, param: int, value: int) -> int:
        return int(self.lib.mallopt(param, value))

    def malloc_trim(self, pad: int) -> int:
        return int(self.lib.malloc_trim(pad))


def glibc_malloc(environ: Mapping[str, str] | None = None) -> Malloc | None:
    """glibc's malloc to tune, or None: another C library, or EGRESSPROXY_MALLOC_TUNING=off."""
    env = os.environ if environ is None else environ
    if env.get(OFF_VARIABLE, "").strip().lower() in ("off", "0", "false", "no"):
        return None
    if platform.system() != "Linux":
        return None
    try:
        lib = ctypes.CDLL(None)
        lib.gnu_get_libc_version  # glibc's own symbol: absent from musl, whose mallopt ignores everything
        lib.mallopt.argtypes, lib.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        lib.malloc_trim.argtypes, lib.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    except (OSError, AttributeError):
        return None
    return _Glibc(lib)


def tune_allocator(malloc: Malloc | None, environ: Mapping[str, str] | None = None) -> bool:
    """At start-up, before the helper threads: bound the arenas. True when M_ARENA_MAX was set."""
    env = os.environ if environ is None else environ
    if malloc is None:
        log.debug("malloc not tuned: %s", f"{OFF_VARIABLE} is off" if OFF_VARIABLE in env else "not glibc")
        return False
    if ARENA_MAX_VARIABLE in env:
        log.debug("M_ARENA_MAX left as %s sets it", ARENA_MAX_VARIABLE)
        return False
    if malloc.mallopt(_M_ARENA_MAX, ARENA_MAX) != 1:
        log.debug("mallopt(M_ARENA_MAX, %d) refused", ARENA_MAX)
        return False
    log.debug("malloc arenas bounded at %d", ARENA_MAX)
    return True


async def trim_forever(malloc: Malloc, interval: float = TRIM_INTERVAL) -> None:
    """Give malloc's free pages back every `interval` seconds until cancelled, in a helper thread: a trim takes
    ~1 ms, up to ~18 ms right after a burst (madvise of many pages), which the event loop must not wait for.
    ctypes lets go of the GIL for the call; only a malloc of the loop's into the arena being trimmed waits."""
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(trim, malloc)


def trim(malloc: Malloc) -> float:
    """One malloc_trim(0); the seconds it took (logged at debug)."""
    start = time.perf_counter()
    released = malloc.malloc_trim(0)
    spent = time.perf_counter() - start
    log.debug("malloc_trim: %s in %.2f ms", "memory returned" if released else "nothing to return", spent * 1000)
    return spent
