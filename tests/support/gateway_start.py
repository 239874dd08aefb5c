"""Starting a gateway when other test processes on the machine hand out ports from the same range.

`free_port()` checks that a port is free and gives it out; another test process may bind it before our gateway
does. The gateway then exits ("cannot bind ... Address already in use"), and worse, `wait_ready()` may be
answered 200 by the other process's readiness port. Here we wait for *our* process's log to show its proxy
listeners bound, and start it again on new ports when a port was taken.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.support.gateway import GatewayProcess

__all__ = ["start_bound"]


def start_bound(start: Callable[..., GatewayProcess], *documents: str, listeners: int = 1, **kwargs: object) -> GatewayProcess:
    """`start` is the `gateway` fixture; `listeners` the number of "regular listening" lines to wait for (one per
    worker)."""
    for _ in range(3):
        gw = start(*documents, wait=False, **kwargs)
        assert gw.proc is not None
        deadline = time.monotonic() + 30
        while gw.logs().count("regular listening") < listeners and gw.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway not listening after 30s:\n{gw.logs()}")
            time.sleep(0.1)
        if gw.proc.poll() is None:
            gw.wait_ready()
            return gw
        if "Address already in use" not in gw.logs():
            raise RuntimeError(f"egressproxy exited with {gw.proc.returncode}:\n{gw.logs()}")
    raise RuntimeError("three starts in a row found a port taken")
