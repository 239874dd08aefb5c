"""Starting the real `egressproxy run` process on free ports, and waiting until it is ready."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


# Each pytest-xdist worker (and a run without xdist, as worker 0) takes its ports from its own block (20000 up) below the
# kernel's ephemeral range (32768+), so parallel workers never pick the same port and no outgoing connection holds
# one. A block is walked in order, skipping ports something else has bound, so a port comes back only after the
# whole block has been handed out once.
_BLOCK = 1500
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_next = 20000 + (_WORKER % 8) * _BLOCK


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, not handed out recently in this test process, and never by another xdist worker: two
    listeners of one gateway, or of two gateways started side by side, must not be given the same one."""
    global _next
    start = 20000 + (_WORKER % 8) * _BLOCK
    for _ in range(_BLOCK):
        port = _next
        _next = start + (_next + 1 - start) % _BLOCK
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port left in this worker's block {start}-{start + _BLOCK - 1}")


class GatewayProcess:
    """`egressproxy run -c CONFIG` with every port free and its own data dir; a context manager."""

    def __init__(
        self,
        config: Path | list[Path],
        data_dir: Path,
        *,
        modes: list[str] | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.configs = config if isinstance(config, list) else [config]
        self.data_dir = data_dir
        self.host = host
        self.port = free_port()
        self.admin_port, self.ready_port, self.metrics_port = free_port(), free_port(), free_port()
        self.modes = modes if modes is not None else [f"regular@{host}:{self.port}"]
        self.extra_args = extra_args or []
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "gateway.log"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "egressproxy", "run"]
        for c in self.configs:
            cmd += ["-c", str(c)]
        for m in self.modes:
            cmd += ["--mode", m]
        cmd += [
            "--admin-addr", f"127.0.0.1:{self.admin_port}",
            "--ready-addr", f"127.0.0.1:{self.ready_port}",
            "--metrics-addr", f"127.0.0.1:{self.metrics_port}",
            "--data-dir", str(self.data_dir),
            *self.extra_args,
        ]
        return cmd

    def start(self, wait: bool = True) -> "GatewayProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"egressproxy exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.ready_port}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"egressproxy not ready after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def admin(self, path: str, method: str = "GET") -> httpx.Response:
        return httpx.request(method, f"http://127.0.0.1:{self.admin_port}{path}", timeout=10)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=5)

    def __enter__(self) -> "GatewayProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
