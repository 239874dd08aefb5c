"""The long-lived heap kept out of the garbage collector's full passes (`gc.freeze`), for the latency tail.

A serving gateway holds ~180,000 objects from start-up (mitmproxy, pydantic models, the compiled snapshot,
prometheus, cryptography). CPython's cyclic collector walks all of them in every full (generation 2)
collection, which it starts on its own under load: measured at ~110 ms with the event loop stopped, every
in-flight request waiting (docs/performance.md: the intercepted p99 tail). Once start-up is over, what it built
lives until exit, so it is collected once and then frozen: full passes then walk only what serving created.

A reload swaps the snapshot: the heap is unfrozen, collected (the old snapshot's cycles are freed; one pause
per reload, as a full collection would have cost anyway) and frozen again. Objects frozen while still in use
by a request in flight are reclaimed at the next reload's collection at the latest.
"""

from __future__ import annotations

import gc
import logging
import time

__all__ = ["settle"]

log = logging.getLogger("egressproxy")


def settle(why: str) -> float:
    """Collect what start-up (or the last reload) left for the collector, then freeze the rest. Seconds spent."""
    start = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    spent = time.perf_counter() - start
    log.debug("heap settled after %s: %d objects frozen in %.0f ms", why, gc.get_freeze_count(), spent * 1000)
    return spent
