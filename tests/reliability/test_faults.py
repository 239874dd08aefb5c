"""Faults of the gateway's neighbours, each with the behaviour docs/reliability.md promises (its `## Faults` table).

Real gateway process, real clients, misbehaving origins on loopback (tests/support/faulty_origin.py). Cases
already shown elsewhere are not repeated here; the table names their tests. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.dnsserver import DnsServer
from tests.support.faulty_origin import FaultyOrigin
from tests.support.gateway import GatewayProcess
from tests.support.pki import TestCA

REQUEST_TIMEOUT = 2.0


def gateway_doc(access_log: Path) -> str:
    return f"""
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  requestTimeout: {REQUEST_TIMEOUT:g}s
  listeners:
  - {{name: http, protocol: HTTP}}
  - {{name: https, protocol: HTTPS, tls: {{mode: Terminate, caCertRef: {{name: egress-ca}}}}}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {{name: origin-ca}}
    hostAliases:
    - {{ip: 127.0.0.1, hostnames: [api.example.test]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api}}
spec:
  parentRefs: [{{name: eg, sectionName: http}}, {{name: eg, sectionName: https}}]
  hostnames: [api.example.test]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: HTTPListenerPolicy
metadata: {{name: access}}
spec:
  targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}}]
  accessLog:
  - fileSink:
      path: {access_log}
      jsonFormat:
        path: "%REQ(:PATH)%"
        code: "%RESPONSE_CODE%"
        details: "%RESPONSE_CODE_DETAILS%"
        flags: "%RESPONSE_FLAGS%"
"""


def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    total = 0.0
    for line in gw.metrics().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_until(condition: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


def access_lines(path: Path) -> dict[str, dict[str, object]]:
    """The access log by request path and query (each test asks for a path and query of its own)."""
    if not path.exists():
        return {}
    return {line["path"]: line for line in map(json.loads, path.read_text().splitlines())}


class Scene:
    """One gateway for the origin faults (it must survive them all, one after the other): each test names its
    requests apart (`?case=...`) and compares counters before and after, so it sees only its own fault."""

    def __init__(self, gw: GatewayProcess, origin: FaultyOrigin, tls_origin: FaultyOrigin, log: Path, ca: Path) -> None:
        self.gw, self.origin, self.tls_origin, self.log, self.ca = gw, origin, tls_origin, log, ca

    def client(self, *, http2: bool = False) -> httpx.Client:
        verify = ssl.create_default_context(cafile=str(self.ca))
        return httpx.Client(proxy=self.gw.proxy_url, verify=verify, timeout=httpx.Timeout(15.0), http2=http2)

    def url(self, path: str, *, tls: bool = False, case: str = "") -> str:
        if tls:
            return f"https://api.example.test:{self.tls_origin.port}{path}?case=https{case}"
        return f"http://api.example.test:{self.origin.port}{path}?case=http{case}"

    def errors(self, reason: str) -> float:
        return metric(self.gw, "egress_upstream_errors_total", reason=reason)

    def logged(self, path: str, *, tls: bool = False, case: str = "") -> dict[str, object]:
        key = f"{path}?case={'https' if tls else 'http'}{case}"
        wait_until(lambda: key in access_lines(self.log), f"an access-log line for {key}")
        return access_lines(self.log)[key]


@pytest.fixture(scope="module")
def scene(gateway_ca, origin_ca: TestCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    tmp = tmp_path_factory.mktemp("faults")
    cert, key = origin_ca.issue("api.example.test").write(tmp, "leaf")
    pem = textwrap.indent(origin_ca.cert_pem.decode(), "    ")
    trust = f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: origin-ca\nstringData:\n  ca.crt: |\n{pem}"
    config = tmp / "config"
    config.mkdir()
    for i, doc in enumerate((gateway_doc(tmp / "access.log"), gateway_ca[1], trust)):
        (config / f"{i:02d}.yaml").write_text(doc)
    with FaultyOrigin() as origin, FaultyOrigin(tls=(cert, key)) as tls_origin, GatewayProcess(config, tmp / "data") as gw:
        yield Scene(gw, origin, tls_origin, tmp / "access.log", gateway_ca[0])


def assert_gateway_error(r: httpx.Response, status: int, reason: str) -> None:
    """Our answer, not mitmproxy's page: the status, `x-egress-error` and the JSON body naming the reason."""
    assert r.status_code == status, r.text
    assert r.headers.get("x-egress-error") == reason, (r.headers, r.text)
    assert r.headers["content-type"] == "application/json"
    assert r.json()["reason"] == reason
    assert "<html" not in r.text.lower()


# --- the origin resets mid-response ---------------------------------------------------------------------------


@pytest.mark.parametrize(("tls", "http2"), [(False, False), (True, False), (True, True)], ids=["http", "intercepted-https", "intercepted-h2"])
def test_a_reset_mid_body_ends_the_clients_response_promptly_and_is_counted(scene: Scene, tls: bool, http2: bool) -> None:
    """Headers and part of the body arrived, then the origin reset: the response cannot be completed. The
    client sees the exchange fail (never a hang, never a short body passed off as whole), the error is counted
    and the access log marks it."""
    origin = scene.tls_origin if tls else scene.origin
    origin.release.clear()
    case = "-h2" if http2 else ""
    before = scene.errors("upstream-reset")
    with scene.client(http2=http2) as client, client.stream("GET", scene.url("/reset-mid-body", tls=tls, case=case)) as r:
        assert r.status_code == 200  # the headers went to the client as they came (bodies stream through)
        assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        origin.release.set()
        started = time.monotonic()
        with pytest.raises(httpx.HTTPError):  # HTTP/1: the connection closes short of the body; HTTP/2: the stream is reset
            r.read()  # a truncated body never looks whole
    assert time.monotonic() - started < REQUEST_TIMEOUT, "the reset must end the exchange, not the timeout"
    wait_until(lambda: scene.errors("upstream-reset") == before + 1, "egress_upstream_errors_total{reason=upstream-reset}")
    line = scene.logged("/reset-mid-body", tls=tls, case=case)
    assert (line["code"], line["details"], line["flags"]) == (200, "upstream-reset", "UR"), line
    with scene.client() as client:  # and the gateway serves the next request
        assert client.get(scene.url("/fine", tls=tls)).text == "ok"


# --- the origin fails before the response headers ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/close-before-headers", "/reset-before-headers"])
@pytest.mark.parametrize("tls", [False, True], ids=["http", "intercepted-https"])
def test_an_origin_that_goes_away_before_headers_is_a_502_with_our_json(scene: Scene, path: str, tls: bool) -> None:
    """Nothing reached the client yet, so it gets our answer: 502 `upstream-unreachable` (DESIGN.md 4.1's reason
    for an upstream the gateway could not get a response from), the cause in the JSON `error`."""
    before = scene.errors("upstream-unreachable")
    with scene.client() as client:
        r = client.get(scene.url(path, tls=tls))
    assert_gateway_error(r, 502, "upstream-unreachable")
    assert "server closed connection" in r.json()["error"]
    assert scene.errors("upstream-unreachable") == before + 1
    line = scene.logged(path, tls=tls)
    assert (line["code"], line["details"], line["flags"]) == (502, "upstream-unreachable", "UF"), line


# --- malformed responses ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/garbage-status", "/bad-header"])
@pytest.mark.parametrize("tls", [False, True], ids=["http", "intercepted-https"])
def test_a_malformed_response_head_is_a_502_with_our_json_not_mitmproxys_page(scene: Scene, path: str, tls: bool) -> None:
    before = scene.errors("upstream-unreachable")
    started = time.monotonic()
    with scene.client() as client:
        r = client.get(scene.url(path, tls=tls))
    assert_gateway_error(r, 502, "upstream-unreachable")
    assert "Cannot parse HTTP response" in r.json()["error"]
    assert time.monotonic() - started < REQUEST_TIMEOUT  # the origin keeps its socket open: no wait for a close
    assert scene.errors("upstream-unreachable") == before + 1
    line = scene.logged(path, tls=tls)
    assert (line["code"], line["details"]) == (502, "upstream-unreachable"), line


@pytest.mark.parametrize("tls", [False, True], ids=["http", "intercepted-https"])
def test_a_malformed_chunked_body_cuts_the_response_and_is_counted(scene: Scene, tls: bool) -> None:
    """The headers were fine and already went to the client; the first chunk header is not hex. The client's
    connection is closed (its body is incomplete), `upstream-protocol-error` counted and in the access log."""
    before = scene.errors("upstream-protocol-error")
    with scene.client() as client, client.stream("GET", scene.url("/bad-chunked", tls=tls)) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.HTTPError, match="incomplete|closed"):
            r.read()
    wait_until(lambda: scene.errors("upstream-protocol-error") == before + 1, "egress_upstream_errors_total{reason=upstream-protocol-error}")
    line = scene.logged("/bad-chunked", tls=tls)
    assert (line["code"], line["details"], line["flags"]) == (200, "upstream-protocol-error", "UPE"), line


# --- the origin stalls ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["http", "intercepted-https"])
def test_an_origin_that_never_answers_is_a_504_at_the_request_timeout(scene: Scene, tls: bool) -> None:
    before = scene.errors("upstream-timeout")
    started = time.monotonic()
    with scene.client() as client:
        r = client.get(scene.url("/stall", tls=tls))
    elapsed = time.monotonic() - started
    assert_gateway_error(r, 504, "upstream-timeout")
    assert REQUEST_TIMEOUT - 0.2 <= elapsed < REQUEST_TIMEOUT + 3, elapsed
    assert scene.errors("upstream-timeout") == before + 1
    assert scene.logged("/stall", tls=tls)["details"] == "upstream-timeout"


def test_a_body_that_stalls_after_the_headers_is_cut_at_the_request_timeout(scene: Scene) -> None:
    """The headers already went to the client (bodies stream through), so the timeout cannot be a 504: the
    client's connection is closed mid-body at the request timeout, counted and logged as `upstream-timeout`."""
    before = scene.errors("upstream-timeout")
    started = time.monotonic()
    with scene.client() as client, client.stream("GET", scene.url("/stall-body")) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.HTTPError, match="incomplete|closed"):
            r.read()
    elapsed = time.monotonic() - started
    assert REQUEST_TIMEOUT - 0.2 <= elapsed < REQUEST_TIMEOUT + 3, elapsed
    assert scene.errors("upstream-timeout") == before + 1
    line = scene.logged("/stall-body")
    assert (line["code"], line["details"], line["flags"]) == (200, "upstream-timeout", "UT"), line


def test_a_raw_client_is_closed_not_held_when_the_origin_stalls(scene: Scene) -> None:
    """The same from a socket's point of view: the answer arrives and the exchange ends within the timeout."""
    with socket.create_connection((scene.gw.host, scene.gw.port), timeout=REQUEST_TIMEOUT + 5) as sock:
        sock.sendall(f"GET {scene.url('/stall')} HTTP/1.1\r\nHost: api.example.test:{scene.origin.port}\r\n\r\n".encode())
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 504"), head


# --- a mounted credential disappears during rotation ------------------------------------------------------------

KEY_V1, KEY_V2 = "key-v1-SECRET-5f1c", "key-v2-SECRET-9a7e"

CREDENTIAL_CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: http, protocol: HTTP}
  upstreamTLS:
    hostAliases:
    - {ip: 127.0.0.1, hostnames: [api.example.test]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: api
  annotations: {egressproxy.io/allow-cleartext-credentials: "true"}
spec:
  parentRefs: [{name: eg, sectionName: http}]
  hostnames: [api.example.test]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {name: api-key}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]
  secretRef: {name: api-key}
  target: Header
  headerName: x-api-key
"""


def _vanish(key_file: Path, how: str) -> None:
    if how == "deleted":
        key_file.unlink()
    elif how == "emptied":
        staged = key_file.with_name(".staged")
        staged.write_text("")
        staged.replace(key_file)  # atomically, as a rotation tool writes
    else:  # unreadable: a key that points nowhere (mode bits do not stop root, a dangling link does)
        key_file.unlink()
        key_file.symlink_to(key_file.parent / "..gone" / "key")


@pytest.mark.parametrize("how", ["deleted", "emptied", "unreadable"])
def test_a_credential_that_vanishes_mid_rotation_keeps_the_last_good_value(gateway, plain_origin, tmp_path: Path, how: str) -> None:
    """The gateway keeps injecting the last good value, says so in one log line (never the value), counts the
    rejected reload, and takes the next good value as soon as it appears."""
    origin = plain_origin()
    secrets = tmp_path / "secrets"
    (secrets / "api-key").mkdir(parents=True)
    key_file = secrets / "api-key" / "token"
    key_file.write_text(KEY_V1)
    gw = gateway(CREDENTIAL_CONFIG, extra_args=["--secrets-dir", str(secrets)])
    url = f"http://api.example.test:{origin.port}/"

    def injected(client: httpx.Client) -> str:
        r = client.get(url)
        assert r.status_code == 200, r.text
        return str(r.json()["headers"].get("x-api-key"))

    with httpx.Client(proxy=gw.proxy_url, timeout=10) as client:
        assert injected(client) == KEY_V1
        _vanish(key_file, how)
        wait_until(lambda: metric(gw, "egress_config_reloads_total", result="rejected") >= 1, "the rejected reload")
        deadline = time.monotonic() + 3  # a few of the watcher's 1 s polls: the incident must not be re-logged
        while time.monotonic() < deadline:
            assert injected(client) == KEY_V1
        assert gw.logs().count("configuration rejected") == 1, gw.logs()
        assert metric(gw, "egress_config_reloads_total", result="rejected") == 1
        if key_file.is_symlink() or key_file.exists():
            key_file.unlink()
        key_file.write_text(KEY_V2)
        wait_until(lambda: injected(client) == KEY_V2, "the next good value in use")
    text = gw.logs()
    assert "api-key" in text  # the line names the Secret...
    assert KEY_V1 not in text and KEY_V2 not in text  # ...never its value


# --- DNS fails ---------------------------------------------------------------------------------------------------

DNS_CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: allow-all
  listeners:
  - {{name: http, protocol: HTTP}}
---
apiVersion: policy.egressproxy.io/v1alpha1
kind: DNSPolicy
metadata: {{name: dns}}
spec:
  targetRefs: [{{kind: EgressGateway, group: clrk.apoxy.dev, name: eg}}]
  resolvers: ["{resolver}"]
"""


def test_a_resolver_that_answers_servfail_is_a_prompt_502_upstream_unreachable(gateway) -> None:
    """NXDOMAIN and a resolver that never answers: tests/e2e/test_dns_ssrf.py. SERVFAIL (the resolver's own
    failure) is the same answer, without waiting for any timeout, and counted."""
    with DnsServer("127.0.0.53") as dns_server:
        dns_server.servfail.add("broken-zone.test")
        gw = gateway(DNS_CONFIG.format(resolver=dns_server.address))
        started = time.monotonic()
        with httpx.Client(proxy=gw.proxy_url, timeout=20) as client:
            r = client.get("http://broken-zone.test:8080/")
        elapsed = time.monotonic() - started
        print(f"\nSERVFAIL answered in {elapsed:.2f} s")
        assert_gateway_error(r, 502, "upstream-unreachable")
        assert "broken-zone.test" in r.json()["error"]
        assert elapsed < 3, elapsed
        assert dns_server.count("broken-zone.test") >= 1
        assert metric(gw, "egress_upstream_errors_total", reason="upstream-unreachable") == 1
        assert metric(gw, "egress_dns_lookups_total", result="error") >= 1, gw.metrics()


# --- the capture store's disk is read-only ------------------------------------------------------------------------

CAPTURE_CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: http, protocol: HTTP}
  upstreamTLS:
    hostAliases:
    - {ip: 127.0.0.1, hostnames: [api.example.test]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: http}]
  hostnames: [api.example.test]
"""


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs (root only; unmounted in the finalizer). A full disk: tests/e2e/test_capture_faults.py.
    (A volume cannot be remounted read-only under an open database: the kernel refuses while files are open for
    writing, so the data dir is read-only from the start, as a readOnlyRootFilesystem pod without a volume is.)"""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only volume needs root to mount a tmpfs")
    where = tmp_path / "read-only-data"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_read_only_data_dir_drops_captures_counted_and_logged_once_never_traffic(read_only_dir: Path, plain_origin, tmp_path: Path) -> None:
    origin = plain_origin()
    config = tmp_path / "config"
    config.mkdir()
    (config / "gateway.yaml").write_text(CAPTURE_CONFIG)
    gw = GatewayProcess(config, read_only_dir)
    gw.log_path = tmp_path / "gateway.log"  # the data dir cannot hold it
    with gw:
        with httpx.Client(proxy=gw.proxy_url, timeout=10) as client:
            for i in range(20):
                r = client.post(f"http://api.example.test:{origin.port}/r{i}", json={"prompt": "captured"})
                assert r.status_code == 200, r.text
        wait_until(lambda: metric(gw, "egress_capture_drops_total", sink="store", reason="store-error") >= 20, "20 counted drops")
        logs = gw.logs()
    assert logs.count("capture store") == 1, logs  # one line for the incident, not one per record
    assert "Traceback" not in logs and "Addon error" not in logs, logs
    assert list(read_only_dir.iterdir()) == []


# --- the trace collector is down ------------------------------------------------------------------------------------


def test_spans_for_a_collector_that_is_down_are_counted_drops_not_latency(gateway, plain_origin) -> None:
    """Capture and access-log exports to a dead collector: tests/e2e/test_captures.py, test_observability.py.
    Spans were only logged by the OpenTelemetry SDK; a failed export's spans are now counted."""
    origin = plain_origin()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: every export is refused
    try:
        policy = f"""
apiVersion: gateway.kgateway.dev/v1alpha1
kind: HTTPListenerPolicy
metadata: {{name: tracing}}
spec:
  targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}}]
  tracing:
    provider: {{otel: {{httpAddress: "http://127.0.0.1:{dead.getsockname()[1]}", protocol: http/protobuf}}}}
    samplingRate: 100
"""
        gw = gateway(CAPTURE_CONFIG, policy)
        slowest = 0.0
        with httpx.Client(proxy=gw.proxy_url, timeout=10) as client:
            for i in range(10):
                started = time.monotonic()
                assert client.get(f"http://api.example.test:{origin.port}/t{i}").status_code == 200
                slowest = max(slowest, time.monotonic() - started)
        assert slowest < 1.0, slowest
        wait_until(lambda: metric(gw, "egress_trace_span_drops_total", reason="export-failed") == 10, "10 counted span drops", 30)
    finally:
        dead.close()


# --- a buffered response breaks mid-body ---------------------------------------------------------------------------

RESPONSE_GUARD = """
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: guard}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]
  ai:
    promptGuard:
      response:
        regex: {action: MASK, builtins: [CREDIT_CARD]}
"""


def test_a_buffered_response_that_breaks_mid_body_is_a_502_with_our_json(gateway) -> None:
    """A JSON answer under a response guard is buffered whole (docs/guardrails.md), so nothing went to the client
    when the origin closed mid-body: it gets our 502, not mitmproxy's HTML page."""
    with FaultyOrigin() as origin:
        gw = gateway(CAPTURE_CONFIG, RESPONSE_GUARD)
        with httpx.Client(proxy=gw.proxy_url, timeout=10) as client:
            r = client.get(f"http://api.example.test:{origin.port}/close-mid-json")
        assert_gateway_error(r, 502, "upstream-unreachable")
        assert "peer closed connection" in r.json()["error"]
        assert metric(gw, "egress_upstream_errors_total", reason="upstream-unreachable") == 1
        assert metric(gw, "egress_upstream_errors_total", reason="upstream-reset") == 0  # counted once, as answered
