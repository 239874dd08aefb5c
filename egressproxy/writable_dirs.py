"""Where the gateway writes its working files when `--data-dir` cannot be written (a read-only or full volume).

The data dir holds captures (their store counts drops and keeps traffic flowing, egressproxy/capture_store.py)
and working files the engine needs only as files: the combined upstream trust bundle and mitmproxy's confdir.
Those must not stop the gateway; they go to one private temporary folder of this process instead (mkdtemp:
mode 0700, an unpredictable name, so no other user can plant a CA in it), and the gateway says so once.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from pathlib import Path

__all__ = ["private_dir", "writable_or_private"]

log = logging.getLogger("egressproxy")


@functools.cache
def private_dir() -> Path:
    """This process's private fallback folder (created on first use)."""
    return Path(tempfile.mkdtemp(prefix="egressproxy-"))


def writable_or_private(path: Path) -> Path:
    """`path` (created if missing) when this process can write in it, else a folder of the same name under
    `private_dir()` (blocking: call it off the event loop or before it runs)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return path
    except OSError as e:
        fallback = private_dir() / path.name
        fallback.mkdir(exist_ok=True)
        log.warning("cannot write under %s (%s); using %s instead", path, e.strerror or e, fallback)
        return fallback
