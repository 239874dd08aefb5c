"""The mitmweb UI after traffic passed, rendered by headless Chromium (Debian's `chromium`): the flow list shows
the allowed request and the denied ones, and the screenshot is the one in docs/ (`docs/mitmweb-flows.png`).

The PNG goes to the test's temp folder; with EGRESSPROXY_UPDATE_SCREENSHOT=1 it replaces docs/mitmweb-flows.png.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_mitmweb import TOKEN, Mitmweb, _wait_for, mitmweb  # noqa: F401 (fixture)
from tests.support.origins import HttpOrigin

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parents[2] / "docs" / "mitmweb-flows.png"
WIDTH, HEIGHT = 1280, 640

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: demo}
spec:
  defaultPolicy: deny-all
  upstreamTLS:
    hostAliases: [{ip: 127.0.0.1, hostnames: [hello.quickstart.test]}]
  listeners:
  - {name: http, protocol: HTTP}
  - {name: https, protocol: HTTPS, tls: {mode: Terminate}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: hello}
spec:
  parentRefs: [{name: demo, sectionName: http}]
  hostnames: [hello.quickstart.test]
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no headless Chromium (apt-get install chromium)")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def browse(web: Mitmweb, *args: str, route: str = "") -> subprocess.CompletedProcess[str]:
    """Chromium on the UI (the password as `?token=`; `route` e.g. `#/flows/ID/comment` opens one flow), with time
    for the app to load and list the flows."""
    url = f"http://127.0.0.1:{web.web_port}/?token={TOKEN}{route}"
    argv = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            f"--window-size={WIDTH},{HEIGHT}", "--virtual-time-budget=10000", f"--user-data-dir={web.workdir / 'chrome'}",
            *args, url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_the_ui_lists_the_gateways_decisions_and_the_docs_screenshot(mitmweb: Callable[..., Mitmweb],
                                                                    tmp_path: Path) -> None:
    web = mitmweb(CONFIG)
    web.wait_ready()
    with HttpOrigin(name="hello") as origin, httpx.Client(proxy=web.proxy_url, timeout=10) as client:
        assert client.get(f"http://hello.quickstart.test:{origin.port}/").status_code == 200
        assert client.get(f"http://example.com:{origin.port}/admin").status_code == 403
        with pytest.raises(httpx.ProxyError):
            client.get("https://blocked.example.test/")  # the CONNECT is refused
    flows = _wait_for(web, lambda fs: len(fs) >= 3 and all(f.get("comment") for f in fs))
    assert sum(1 for f in flows if f.get("marked")) == 2, flows

    dom = browse(web, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    for shown in ("hello.quickstart.test", "example.com", "blocked.example.test"):
        assert shown in dom.stdout, f"{shown} not in the rendered flow list"
    marked = browse(web, "--dump-dom", route="#/flows?s=~marked")  # the denied flows, filtered
    assert "example.com" in marked.stdout and "hello.quickstart.test" not in marked.stdout

    shot = tmp_path / "mitmweb-flows.png"
    denied = next(f for f in flows if f["request"]["host"] == "example.com")
    taken = browse(web, f"--screenshot={shot}", route=f"#/flows/{denied['id']}/comment")
    assert taken.returncode == 0 and shot.is_file(), taken.stderr
    assert png_size(shot) == (WIDTH, HEIGHT)
    if os.environ.get("EGRESSPROXY_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, DOCS)
    assert DOCS.is_file() and png_size(DOCS) == (WIDTH, HEIGHT), "docs/mitmweb-flows.png: rerun with EGRESSPROXY_UPDATE_SCREENSHOT=1"
