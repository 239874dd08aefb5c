"""The copy-paste commands of docs/deployment.md, docs/transparent-mode.md and docs/mitmweb.md, read from the
pages (tests/support/doc_blocks.py: the block after each `tested:` marker) and run as written: only ports are
swapped for free ones, and the quick start's origin port for a test origin's. docs/clients.md's recipes are run
by tests/e2e/test_client_recipes.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.doc_blocks import doc_block
from tests.support.gateway import free_port
from tests.support.origins import HttpOrigin

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MANIFESTS = REPO / "config" / "kubernetes" / "manifests"


def _shell(script: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    path = f"{BIN}:/usr/local/bin:/usr/bin:/bin"
    return subprocess.run(["bash", "-ec", script], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={"PATH": path, "HOME": str(cwd), **(env or {})})


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A working directory that looks like the repository's root (its config/ and .venv/), so the pages'
    relative paths resolve, and whatever the commands write stays in tmp."""
    for name in ("config", ".venv", "addons"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def test_render_k8s_as_documented(checkout: Path) -> None:
    result = _shell(doc_block("deployment.md", "render-k8s"), checkout)
    assert result.returncode == 0, result.stderr
    assert (checkout / "gateway.k8s").read_text() == (MANIFESTS / "gateway.k8s").read_text()


def test_render_k8s_sidecar_as_documented(checkout: Path) -> None:
    block = doc_block("deployment.md", "render-k8s-sidecar")
    image = re.search(r"--app-image (\S+)", block)
    assert image is not None, block
    result = _shell(block, checkout)
    assert result.returncode == 0, result.stderr
    written = (checkout / "sidecar.k8s").read_text()
    assert f"image: {image.group(1)}\n" in written
    # The checked-in example is the same rendering with the default workload image.
    assert written.replace(image.group(1), "your-app:latest") == (MANIFESTS / "sidecar.k8s").read_text()


def test_iptables_rules_as_documented(tmp_path: Path) -> None:
    """The command the page shows prints the rules the page lists (its `# notes` aside, IPv6 summarised)."""
    block = doc_block("transparent-mode.md", "iptables").splitlines()
    assert block[0].startswith("$ egressproxy iptables ")
    result = _shell(block[0][2:], tmp_path)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    shown = [re.sub(r"\s+# .*$", "", line) for line in block[1:]]
    assert shown[0].endswith("...") and printed[0].startswith(shown[0].removesuffix("..."))
    v4 = [line for line in shown[1:] if not line.startswith("ip6tables")]
    assert printed[2 : 2 + len(v4)] == v4
    assert shown[-1] == "ip6tables ..." and any("-d ::1/128 -j RETURN" in line for line in printed)


class _Mitmweb:
    """docs/mitmweb.md's run block, started in `cwd` with its ports swapped; stopped by its process group."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.proxy, self.web = free_port(), free_port()
        self.password = os.urandom(8).hex()
        block = doc_block("mitmweb.md", "mitmweb")
        assert 'PW="$(openssl rand -hex 16)"' in block and "8090" in block and "8091" in block, block
        self.block = self.swap(block.replace('PW="$(openssl rand -hex 16)"', f"PW={self.password}"))
        self.log = cwd / "mitmweb.log"

    def swap(self, text: str) -> str:
        return text.replace("127.0.0.1:8090", f"127.0.0.1:{self.proxy}").replace("8091", str(self.web))

    def __enter__(self) -> "_Mitmweb":
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["bash", "-ec", self.block], cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(self.cwd), "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 30
        while "egress gateway default/quickstart loaded" not in self.log.read_text(errors="replace") or not self._listening():
            assert self.proc.poll() is None, self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, self.log.read_text(errors="replace")
            time.sleep(0.1)
        return self

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.proxy), timeout=1):
                return True
        except OSError:
            return False

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)  # the group this test started: bash and its mitmweb
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


@pytest.fixture
def documented_mitmweb(checkout: Path) -> Iterator[_Mitmweb]:
    with _Mitmweb(checkout) as web:
        yield web


def test_mitmweb_as_documented(documented_mitmweb: _Mitmweb, checkout: Path) -> None:
    web = documented_mitmweb
    assert f"mitmweb password: {web.password}" in web.log.read_text()
    with HttpOrigin(name="hello") as origin:
        allowed, denied = web.swap(doc_block("mitmweb.md", "mitmweb-curl")).replace(":18081/", f":{origin.port}/").splitlines()
        ok = _shell(allowed, checkout)
        assert ok.returncode == 0 and json.loads(ok.stdout)["origin"] == "hello", ok.stdout + ok.stderr
    refused = _shell(denied, checkout)
    assert refused.returncode == 56 and "403" in refused.stderr, refused.stderr  # CURLE_RECV_ERROR: the CONNECT's 403
    # The CA the illustrative HTTPS line names is where the page says.
    assert (checkout / ".egressproxy" / "ca" / "default" / "quickstart" / "ca.crt").is_file()

    api = _shell(web.swap(doc_block("mitmweb.md", "mitmweb-api")), checkout, env={"PW": web.password})
    assert api.returncode == 0, api.stderr
    assert '"lazy"' in api.stdout.splitlines()
    flows = [json.loads(line) for line in re.findall(r"^\{.*?^\}", api.stdout, re.S | re.M)]
    by_host = {f["host"]: f for f in flows}
    assert by_host["hello.quickstart.test"]["status"] == 200, api.stdout
    assert by_host["example.com"]["marked"] == "\u26d4", api.stdout
    assert by_host["example.com"]["comment"].startswith("denied: no-route by EgressGateway/default/quickstart")
