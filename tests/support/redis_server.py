"""A real `redis-server` on a free loopback port, for the rate-limit store tests.

`scripts/test-prerequisites` installs Debian's `redis-server` when run as root; where it is absent the tests that
need it skip with one line saying so (`require_redis_server`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.gateway import free_port

__all__ = ["RedisServer", "redis_server", "require_redis_server", "SKIP_REASON"]

SKIP_REASON = "redis-server not installed (scripts/test-prerequisites installs it as root: apt-get install redis-server)"


def require_redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        pytest.skip(SKIP_REASON)
    return path


class RedisServer:
    """`redis-server` on 127.0.0.1, no persistence, optionally with a password; stop() and start() again on the
    same port (a Redis outage and its recovery)."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.binary = require_redis_server()
        self.directory = directory
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "RedisServer":
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--dir", str(self.directory), "--protected-mode", "no",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        log = open(self.directory / "redis.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64):
                        return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server not listening on {self.address} after {timeout}s")

    def stop(self) -> None:
        """Kill it (an outage, not a clean shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start real redis-servers (stopped after the test); skips with one line where redis-server is absent."""
    started: list[RedisServer] = []

    def start(password: str | None = None) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(started)}", password).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
