"""The first five minutes: `scripts/quickstart` as a new user runs it (on free ports, with its own data dir).

It installs only when needed and says nothing about setuptools, serves the README's first request without the
internet (its local origin as hello.quickstart.test), denies what the quick start does not allow, and takes its
origin down with it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def readme_first_requests() -> list[str]:
    """The README's first two commands after starting the quick start (the local origin, then a denied host)."""
    lines = [line.split("#")[0].strip() for line in (ROOT / "README.md").read_text().splitlines()]
    found = [line for line in lines if line.startswith("curl --proxy http://127.0.0.1:8080 http://")]
    assert len(found) >= 2, found
    return found[:2]


class Quickstart:
    def __init__(self, tmp: Path) -> None:
        self.proxy, self.ready, self.origin = free_port(), free_port(), free_port()
        self.log = tmp / "quickstart.log"
        self.argv = [
            str(ROOT / "scripts" / "quickstart"),
            "--mode", f"regular@127.0.0.1:{self.proxy}",
            "--ready-addr", f"127.0.0.1:{self.ready}",
            "--admin-addr", f"127.0.0.1:{free_port()}",
            "--metrics-addr", f"127.0.0.1:{free_port()}",
            "--data-dir", str(tmp / "data"),
        ]
        self.env = {**os.environ, "QUICKSTART_ORIGIN_PORT": str(self.origin)}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "Quickstart":
        with open(self.log, "wb") as out:  # its own session: the test ends exactly what it started
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        deadline = time.monotonic() + 240  # the first run may install into .venv
        while True:
            assert self.proc.poll() is None, self.text()
            try:
                if httpx.get(f"http://127.0.0.1:{self.ready}/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.2)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


def test_quickstart_is_quiet_serves_the_local_origin_and_installs_once(tmp_path: Path) -> None:
    (tmp_path / "first").mkdir()
    with Quickstart(tmp_path / "first") as first:
        proxy = f"http://127.0.0.1:{first.proxy}"
        allowed = httpx.get(f"http://hello.quickstart.test:{first.origin}/", proxy=proxy, timeout=10)
        denied = httpx.get("http://example.com/", proxy=proxy, timeout=10)
        printed = first.text()
        hello, example = (
            subprocess.run(  # the README's lines, as a user pastes them
                ["bash", "-c", cmd.replace("127.0.0.1:8080", f"127.0.0.1:{first.proxy}")
                 .replace(":18081", f":{first.origin}") + " -sS -i"], capture_output=True, text=True, timeout=30,
            )
            for cmd in readme_first_requests()
        )
    assert allowed.status_code == 200 and "hello from the quick start" in allowed.text
    assert "hello from the quick start" in hello.stdout, hello.stderr
    assert example.stdout.startswith("HTTP/1.1 403"), example.stdout + example.stderr
    assert denied.status_code == 403 and denied.headers["x-egress-denied"] == "no-route"
    for noise in ("Deprecat", "setuptools", "!!", "Traceback"):
        assert noise not in printed, printed
    assert f"curl --proxy http://127.0.0.1:8080 http://hello.quickstart.test:{first.origin}/" in printed
    assert not _listening(first.origin)  # the origin went down with the script

    (tmp_path / "second").mkdir()
    with Quickstart(tmp_path / "second") as second:
        again = second.text()
    assert "installing" not in again, again  # nothing changed: no second install
