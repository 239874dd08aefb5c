"""mitmweb inspection (DESIGN.md 1.3 and 3): the real `mitmweb -s addons/egress.py --set egress_config=PATH`.

The script is given by absolute path and mitmweb runs in another working directory, as an operator would start
it; flows are read back over mitmweb's REST API with `Authorization: Bearer <web_password>`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_interception import GATEWAY  # the same one-listener interception gateway

from tests.support.gateway import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "addons" / "egress.py"
MITMWEB = Path(sys.executable).parent / "mitmweb"
TOKEN = "mitmweb-test-token"

ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [api.example.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
"""


class Mitmweb:
    """`mitmweb -s /abs/addons/egress.py` on free ports, run from `cwd`; a context manager."""

    def __init__(self, config: Path, workdir: Path, *, explicit_mode: bool = True, extra: tuple[str, ...] = ()) -> None:
        self.config = config
        self.workdir = workdir
        self.explicit_mode = explicit_mode
        self.extra = extra
        self.port, self.web_port = free_port(), free_port()
        self.log_path = workdir / "mitmweb.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(MITMWEB),
            "-s", str(SCRIPT),
            "--set", f"egress_config={self.config}",
            *self._listen_args(),
            "--web-port", str(self.web_port),
            "--set", f"web_password={TOKEN}",
            "--set", "web_open_browser=false",
            "--set", f"confdir={self.workdir / 'confdir'}",
            "--set", f"egress_data_dir={self.workdir / 'data'}",
            *self.extra,
        ]

    def _listen_args(self) -> list[str]:
        if self.explicit_mode:
            return ["--mode", f"regular@127.0.0.1:{self.port}"]
        return ["--listen-port", str(self.port)]  # mitmweb's default mode, `regular`, without an address

    def start(self) -> "Mitmweb":
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            # Unbuffered, so each log line is in the file when it is logged (a block-buffered stdout once left the
            # file empty at the moment the test read it).
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env)
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"mitmweb exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.api("GET", "/flows").status_code == 200:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"mitmweb not ready after {timeout}s:\n{self.logs()}")

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """The log once it contains `text` (the line may land just after the condition the test waited on)."""
        deadline = time.monotonic() + timeout
        while True:
            logs = self.logs()
            if text in logs:
                return logs
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in mitmweb's log after {timeout}s:\n{logs}")
            time.sleep(0.1)

    def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"mitmweb still running after {timeout}s:\n{self.logs()}") from None

    def api(self, method: str, path: str, *, token: str | None = TOKEN, body: object = None) -> httpx.Response:
        headers: dict[str, str] = {}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        if method != "GET":  # tornado's XSRF check: the header must equal the cookie
            headers["x-xsrftoken"] = "xsrf"
            headers["cookie"] = "_mitmproxy_xsrf=xsrf"
        url = f"http://127.0.0.1:{self.web_port}{path}"
        return httpx.request(method, url, headers=headers, json=body, timeout=5)

    def flows(self) -> list[dict]:
        r = self.api("GET", "/flows")
        r.raise_for_status()
        return r.json()

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def mitmweb(tmp_path: Path) -> Iterator[Callable[..., Mitmweb]]:
    """Write YAML documents into a config folder and start mitmweb on it (stopped after the test)."""
    running: list[Mitmweb] = []

    def start(*documents: str, explicit_mode: bool = True, extra: tuple[str, ...] = ()) -> Mitmweb:
        config = tmp_path / f"config-{len(running)}"
        config.mkdir()
        for i, doc in enumerate(documents):
            (config / f"{i:02d}.yaml").write_text(textwrap.dedent(doc))
        web = Mitmweb(config, tmp_path / f"run-{len(running)}", explicit_mode=explicit_mode, extra=extra)
        running.append(web)
        return web.start()

    yield start
    for web in running:
        web.stop()


def _wait_for(web: Mitmweb, predicate: Callable[[list[dict]], object], timeout: float = 5.0) -> list[dict]:
    """Flows once `predicate(flows)` holds (annotations land in the response hook, just after the client's bytes)."""
    deadline = time.monotonic() + timeout
    while True:
        flows = web.flows()
        if predicate(flows) or time.monotonic() > deadline:
            return flows
        time.sleep(0.1)


def _read_flows(data: bytes) -> list:
    with warnings.catch_warnings():  # mitmproxy.io imports flowfilter, whose pyparsing calls are deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        from mitmproxy.io import FlowReader
    return list(FlowReader(BytesIO(data)).stream())


def _find(flows: list[dict], method: str, host: str, path: str | None = None) -> dict | None:
    for f in flows:
        req = f.get("request") or {}
        if req.get("method") == method and req.get("host") == host and (path is None or req.get("path") == path):
            return f
    return None


def test_mitmweb_serves_the_gateway_and_shows_its_decisions(mitmweb, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin("api.example.test")
    web = mitmweb(GATEWAY, ROUTE, gateway_ca[1], trust_secret)
    web.wait_ready()

    web.wait_log(f"egress gateway default/eg loaded from {web.config}: generation 1")

    # The REST API needs the token.
    assert web.api("GET", "/flows", token=None).status_code == 403

    # Our configure sets the engine options mitmweb would otherwise default differently.
    options = web.api("GET", "/options").json()
    assert options["connection_strategy"]["value"] == "lazy"
    assert options["connection_strategy"]["default"] == "eager"  # mitmproxy's own: lazy is our doing
    assert options["upstream_cert"]["value"] is False
    assert options["egress_config"]["value"] == str(web.config)

    verify = ssl.create_default_context(cafile=str(gateway_ca[0]))
    with httpx.Client(proxy=web.proxy_url, verify=verify, timeout=10) as client:
        allowed = client.get(f"https://api.example.test:{origin.port}/v1/hello")
        assert allowed.status_code == 200
        assert allowed.json()["path"] == "/v1/hello"
        denied_request = client.get(f"https://api.example.test:{origin.port}/admin")
        assert denied_request.status_code == 403
        assert denied_request.headers["x-egress-denied"] == "no-route"

    out = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "10", "--proxy", web.proxy_url, "https://unrouted.example.test/"],
        capture_output=True, text=True, timeout=20,
    )
    assert "HTTP/1.1 403" in out.stdout, out.stdout + out.stderr
    assert "x-egress-denied: no-route" in out.stdout

    def complete(flows: list[dict]) -> bool:
        a = _find(flows, "GET", "api.example.test", "/v1/hello")
        return bool(a and a.get("comment") and _find(flows, "CONNECT", "unrouted.example.test"))

    flows = _wait_for(web, complete)
    dump = json.dumps(flows, indent=1)

    ok = _find(flows, "GET", "api.example.test", "/v1/hello")
    assert ok is not None, dump
    assert ok["response"]["status_code"] == 200
    trace = ok["comment"].splitlines()  # the whole decision trace (tests/e2e/test_mitmweb_trace.py checks it all)
    assert trace[:2] == ["allowed: 200", "outcome: allow 200 reason: route by HTTPRoute/default/api"], dump
    assert {"listener: https", "route: default/api"} <= set(trace), dump
    assert not ok["marked"]

    no_route = _find(flows, "GET", "api.example.test", "/admin")
    assert no_route is not None, dump
    assert no_route["response"]["status_code"] == 403
    assert no_route["marked"] == "\u26d4"  # ":no_entry:"
    assert no_route["comment"].splitlines()[0] == "denied: no-route by EgressGateway/default/eg"

    connect = _find(flows, "CONNECT", "unrouted.example.test")
    assert connect is not None, f"the denied CONNECT is not in mitmweb's flow list:\n{dump}"
    assert connect["response"]["status_code"] == 403
    assert connect["marked"] == "\u26d4"
    assert connect["comment"].splitlines()[0] == "denied: no-route by EgressGateway/default/eg"

    # The same capture store as `egressproxy run`, under egress_data_dir.
    def captured() -> list[dict]:
        out = subprocess.run(
            [sys.executable, "-m", "egressproxy", "captures", "--data-dir", str(web.workdir / "data"), "--json"],
            capture_output=True, text=True, timeout=30,
        )
        return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]

    deadline = time.monotonic() + 10
    while not any("/v1/hello" in (r.get("url") or "") for r in captured()):
        assert time.monotonic() < deadline, "no capture record under egress_data_dir"
        time.sleep(0.2)

    # The full record (mitmproxy metadata) is in the flow file mitmweb saves: it must serialize.
    dumped = web.api("GET", "/flows/dump")
    assert dumped.status_code == 200, web.logs()
    saved = {f.id: f for f in _read_flows(dumped.content)}
    assert saved[connect["id"]].metadata["egress"]["verdict"]["reason"] == "no-route"
    assert saved[ok["id"]].metadata["egress"]["route"] == "default/api"

    # Changing egress_config at run time to an invalid one is refused; the running gateway keeps serving.
    bad = web.config.parent / "bad.yaml"
    bad.write_text(
        "apiVersion: clrk.apoxy.dev/v1alpha1\nkind: EgressGateway\nmetadata: {name: eg}\n"
        "spec:\n  defaultPolicy: deny-al\n"
    )
    r = web.api("PUT", "/options", body={"egress_config": str(bad)})
    assert r.status_code == 400, r.text
    assert "is invalid" in r.text and "still serving generation 1" in r.text
    web.wait_log(f"{bad}:5: EgressGateway/default/eg: spec.defaultPolicy")
    assert web.api("GET", "/options").json()["egress_config"]["value"] == str(web.config)
    with httpx.Client(proxy=web.proxy_url, verify=verify, timeout=10) as client:
        assert client.get(f"https://api.example.test:{origin.port}/v1/again").status_code == 200


def test_invalid_egress_config_is_reported_with_file_and_line_and_mitmweb_exits(mitmweb, gateway_ca):
    broken = GATEWAY.replace("defaultPolicy: deny-all", "defaultPolicy: deny-al\n  listenerz: []")
    web = mitmweb(broken, gateway_ca[1])
    code = web.wait_exit()
    logs = web.logs()
    assert code != 0, logs
    config = web.config / "00.yaml"
    assert f"{config}:6: EgressGateway/default/eg: spec.defaultPolicy: unsupported value 'deny-al'" in logs, logs
    assert f"{config}:7: EgressGateway/default/eg: spec.listenerz: unknown field" in logs, logs
    assert "the gateway is not serving" in logs
    assert "egress gateway default/eg loaded" not in logs
    assert "Web server listening" not in logs


def test_a_mode_without_an_address_listens_on_loopback_only(mitmweb, gateway_ca, trust_secret):
    """mitmweb's default `regular` mode binds every interface; under the gateway it is loopback unless asked."""
    web = mitmweb(GATEWAY, gateway_ca[1], trust_secret, explicit_mode=False)
    web.wait_ready()
    servers = web.api("GET", "/state").json()["servers"]
    assert [s["listen_addrs"] for s in servers.values()] == [[["127.0.0.1", web.port]]], servers
    out = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "10", "--proxy", web.proxy_url, "https://unrouted.example.test/"],
        capture_output=True, text=True, timeout=20,
    )
    assert "x-egress-denied: no-route" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("option", ["emudhra", "emudhra_old"])
def test_signing_with_a_publicly_known_key_is_refused(mitmweb, gateway_ca, trust_secret, option):
    """mitmproxy 12.3's emudhra options sign with a key anyone can download: mitmweb does not start with them."""
    web = mitmweb(GATEWAY, gateway_ca[1], trust_secret, extra=("--set", f"{option}=true"))
    code = web.wait_exit()
    logs = web.logs()
    assert code != 0, logs
    assert f"refusing to run with {option} enabled" in logs, logs
    assert "Web server listening" not in logs


def test_turning_on_a_publicly_known_signing_key_at_run_time_is_rejected(mitmweb, gateway_ca, trust_secret):
    web = mitmweb(GATEWAY, gateway_ca[1], trust_secret)
    web.wait_ready()
    r = web.api("PUT", "/options", body={"emudhra": True})
    assert r.status_code == 400, r.text
    assert "refusing to run with emudhra enabled" in r.text
    assert web.api("GET", "/options").json()["emudhra"]["value"] is False
