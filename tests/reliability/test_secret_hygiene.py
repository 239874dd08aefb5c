"""Secret hygiene (issue 14, item 7): no secret the gateway handles ends up anywhere it writes or serves.

One gateway runs with every way a secret reaches it: a CredentialInjectionPolicy whose Secret comes from
--secrets-dir (a header), two from Secrets in the config (a header and a query parameter), proxy credentials
checked by HTTPListenerPolicy basicAuth against an htpasswd Secret, a client `Authorization` and `x-api-key` the
injection replaces, an OTLP header token. Captures are on (store under --data-dir and OTLP export), an access
log goes to a file and to an OTLP collector, and the HTTPS listener intercepts with a CA minted under
--data-dir (and its leaf certificate cache). After traffic, each secret's bytes - raw, URL-encoded, base64 at
every alignment, and the Basic `user:pass` base64 - are searched in every file under --data-dir (the gateway's
stdout/stderr is one of them), the access log, `egressproxy captures --json`, `/config_dump`, `/stats`,
`/metrics` and the raw OTLP request bodies. A positive control checks the origin really got the injected
values, so a search that finds nothing is not a search that cannot find anything.

The admin port test binds `--admin-addr 0.0.0.0:PORT` and connects from this machine's non-loopback address
(the source is then not in 127.0.0.0/8): refused unless `--admin-allow-cidr` names it.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import stat
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from passlib.hash import bcrypt

from tests.support.capture_origin import CaptureOrigin
from tests.support.gateway import GatewayProcess
from tests.support.pki import TestCA

FILE_TOKEN = "FILE-SECRET-from-secrets-dir"
CONFIG_KEY = "CONFIG-SECRET-api-key"
QUERY_KEY = "QUERY-SECRET key/+&="
CLIENT_BEARER = "CLIENT-SECRET-bearer-token"
CLIENT_API_KEY = "CLIENT-SECRET-x-api-key"
PROXY_USER, PROXY_PASSWORD = "team-a/agent", "PROXY-SECRET-password"
OTLP_TOKEN = "OTLP-SECRET-header-token"
SECRETS = (FILE_TOKEN, CONFIG_KEY, QUERY_KEY, CLIENT_BEARER, CLIENT_API_KEY, PROXY_PASSWORD, OTLP_TOKEN)
HOST = "api.example.test"


def needles(secret: str) -> dict[str, bytes]:
    """The spellings of `secret` a leak could take: raw, URL-encoded both ways, base64 (standard and URL-safe) at
    each of the three alignments it can have inside a longer encoded value, the edges that depend on the
    neighbouring bytes cut off."""
    raw = secret.encode()
    out = {
        "raw": raw,
        "url-encoded": urllib.parse.quote(secret, safe="").encode(),
        "form-encoded": urllib.parse.quote_plus(secret).encode(),
    }
    for shift in range(3):
        for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            encoded = encode(b"\0" * shift + raw)
            out[f"{name}@{shift}"] = encoded[4 if shift else 0 : -4]
    return out


def basic(user: str, password: str) -> bytes:
    return base64.b64encode(f"{user}:{password}".encode())


def leaks(where: str, data: bytes) -> list[str]:
    found = [f"{secret!r} ({kind}) in {where}" for secret in SECRETS for kind, n in needles(secret).items() if n in data]
    if basic(PROXY_USER, PROXY_PASSWORD) in data:
        found.append(f"the Basic proxy credentials in {where}")
    return found


class RawCollector:
    """An OTLP/HTTP endpoint that keeps every request's path, headers and raw body (any protobuf the exporters
    send is searched as bytes, not decoded, so nothing a decoder skips escapes the search)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with lock:
                    owner.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "RawCollector":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def config(collector: str, access_log: Path, trust_pem: str, htpasswd: str) -> str:
    pem = textwrap.indent(trust_pem, "    ")
    users = textwrap.indent(htpasswd, "    ")
    return f"""
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners:
  - {{name: https, protocol: HTTPS, tls: {{mode: Terminate}}}}
  - {{name: http, protocol: HTTP}}
  otlp:
    endpoint: {collector}
    headers: {{authorization: "Bearer {OTLP_TOKEN}"}}
    captureBody: {{maxBytes: 4096}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {{name: origin-ca}}
    hostAliases:
    - {{ip: 127.0.0.1, hostnames: [{HOST}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}]
  hostnames: [{HOST}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: HTTPListenerPolicy
metadata: {{name: proxy-auth}}
spec:
  targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}}]
  basicAuth: {{credentialsSecretRef: {{name: proxy-users}}}}
  accessLog:
  - fileSink:
      path: {access_log}
      jsonFormat:
        path: "%REQ(:PATH)%"
        auth: "%REQ(AUTHORIZATION)%"
        api_key: "%REQ(X-API-KEY)%"
        proxy_auth: "%REQ(PROXY-AUTHORIZATION)%"
        code: "%RESPONSE_CODE%"
  - otel: {{endpoint: '{collector}', protocol: http/protobuf}}
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: LoggingPolicy
metadata: {{name: everything}}
spec:
  targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}}]
  captureRequest: true
  captureResponse: true
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {{name: from-file}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}}]
  secretRef: {{name: upstream-token}}
  target: Header
  headerName: Authorization
  valuePrefix: "Bearer "
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {{name: from-config}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}}]
  secretRef: {{name: api-key}}
  target: Header
  headerName: x-api-key
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {{name: query}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}}]
  secretRef: {{name: query-key}}
  target: QueryParam
  queryParamName: sig
---
apiVersion: v1
kind: Secret
metadata: {{name: api-key}}
stringData: {{token: {json.dumps(CONFIG_KEY)}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: query-key}}
stringData: {{token: {json.dumps(QUERY_KEY)}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: proxy-users}}
stringData:
  .htpasswd: |
{users}
---
apiVersion: v1
kind: Secret
metadata: {{name: origin-ca}}
stringData:
  ca.crt: |
{pem}
"""


def wildcard_port() -> int:
    """A port free on every address, from the kernel's ephemeral range: the admin port binds 0.0.0.0, and
    free_port() only checks 127.0.0.1 in a block other sessions on this machine also walk."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def own_ports(gw: GatewayProcess) -> GatewayProcess:
    """`gw` with every port the kernel's choice: other test runs on this machine walk the same free_port()
    block, and a gateway answering on a port we were handed would make this suite search the wrong process."""
    gw.port, gw.ready_port, gw.metrics_port = wildcard_port(), wildcard_port(), wildcard_port()
    gw.modes = [f"regular@{gw.host}:{gw.port}"]
    return gw


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine outside 127.0.0.0/8 (eth0's, usually), or None."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            return fields[fields.index("inet") + 1].split("/")[0]
    return None


class Scene:
    def __init__(self, gw: GatewayProcess, origin: CaptureOrigin, collector: RawCollector, access_log: Path,
                 admin_port: int) -> None:
        self.gw, self.origin, self.collector, self.access_log = gw, origin, collector, access_log
        self.admin_port = admin_port
        self.ca = gw.data_dir / "ca" / "default" / "eg" / "ca.crt"

    def client(self) -> httpx.Client:
        proxy = httpx.Proxy(self.gw.proxy_url, auth=(PROXY_USER, PROXY_PASSWORD))
        return httpx.Client(proxy=proxy, verify=ssl.create_default_context(cafile=str(self.ca)), timeout=15)

    def admin(self, path: str) -> bytes:
        return httpx.get(f"http://127.0.0.1:{self.admin_port}{path}", timeout=10).content


def wait_until(cond: Callable[[], object], message: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def captures_json(data_dir: Path) -> bytes:
    out = subprocess.run(
        [sys.executable, "-m", "egressproxy", "captures", "--data-dir", str(data_dir), "--json", "--limit", "1000"],
        capture_output=True, timeout=30,
    )
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, origin_ca: TestCA) -> Iterator[Scene]:
    tmp = tmp_path_factory.mktemp("hygiene")
    cert, key = origin_ca.issue(HOST).write(tmp, "origin")
    secrets_dir = tmp / "secrets"
    (secrets_dir / "upstream-token").mkdir(parents=True)
    (secrets_dir / "upstream-token" / "token").write_text(FILE_TOKEN + "\n")
    htpasswd = f"{PROXY_USER}:{bcrypt.using(rounds=4).hash(PROXY_PASSWORD)}"
    access_log = tmp / "logs" / "access.log"
    access_log.parent.mkdir()
    with CaptureOrigin(cert, key) as origin, RawCollector() as collector:
        cfg = tmp / "config"
        cfg.mkdir()
        (cfg / "gateway.yaml").write_text(config(collector.url, access_log, origin_ca.cert_pem.decode(), htpasswd))
        admin_port = wildcard_port()
        gw = own_ports(GatewayProcess(cfg, tmp / "data", extra_args=[
            "--secrets-dir", str(secrets_dir), "--log-level", "debug", "--admin-addr", f"0.0.0.0:{admin_port}",
        ]))
        with gw:
            yield Scene(gw, origin, collector, access_log, admin_port)


def send_traffic(scene: Scene) -> None:
    """Requests carrying every client-side secret: intercepted HTTPS through an authenticated CONNECT, and a plain
    HTTP request (proxy credentials on the request itself) the gateway denies."""
    client_headers = {"authorization": f"Bearer {CLIENT_BEARER}", "x-api-key": CLIENT_API_KEY}
    with scene.client() as client:
        for i in range(3):
            r = client.post(f"https://{HOST}:{scene.origin.port}/v1/call-{i}?q=1", json={"n": i}, headers=client_headers)
            assert r.status_code == 200, r.text
        denied = client.get(f"http://denied.example.test:{wildcard_port()}/denied", headers=client_headers)
        assert denied.status_code == 403, denied.text


def test_no_secret_reaches_anything_the_gateway_writes_or_serves(scene: Scene) -> None:
    send_traffic(scene)
    # Positive control: the injected values went upstream, the client's own were replaced.
    seen = [s for s in scene.origin.server.seen if s[1].startswith("/v1/call-")]
    assert len(seen) == 3
    _, path, headers, _ = seen[-1]
    assert headers["authorization"] == f"Bearer {FILE_TOKEN}"
    assert headers["x-api-key"] == CONFIG_KEY
    assert "sig=" + urllib.parse.quote(QUERY_KEY, safe="") in path
    assert "proxy-authorization" not in headers
    assert leaks("the origin's request", json.dumps(seen[-1][:3]).encode()), "the search finds the injected values"
    # Everything exported and logged has arrived before the search.
    wait_until(lambda: scene.access_log.exists() and len(scene.access_log.read_text().splitlines()) >= 4,
               "four access log lines")
    wait_until(lambda: b"/denied" in captures_json(scene.gw.data_dir), "the denied request captured")
    wait_until(lambda: any(h.get("authorization") == f"Bearer {OTLP_TOKEN}" for _, h, _ in scene.collector.requests),
               f"the capture export (with its token) at the collector: {[(p, h) for p, h, _ in scene.collector.requests]}")
    wait_until(lambda: any(not h.get("authorization") for _, h, _ in scene.collector.requests), "the access log export")

    found: list[str] = []
    found += leaks("/config_dump", scene.admin("/config_dump"))
    found += leaks("/stats", scene.admin("/stats"))
    found += leaks("/metrics", scene.gw.metrics().encode())
    found += leaks("egressproxy captures --json", captures_json(scene.gw.data_dir))
    found += leaks("OTLP bodies", b"\n".join(body for _, _, body in scene.collector.requests))
    found += leaks("the access log", scene.access_log.read_bytes())
    # The store's records are committed (the CLI read them): they are in captures.db or its WAL, both read here.
    files = [p for p in scene.gw.data_dir.rglob("*") if p.is_file()]
    assert scene.gw.log_path in files and any(p.name.startswith("captures.db") for p in files)
    for path in files:
        found += leaks(str(path.relative_to(scene.gw.data_dir)), path.read_bytes())
    assert found == []


def test_ca_key_and_certificate_cache_are_private(scene: Scene) -> None:
    with scene.client() as client:
        assert client.get(f"https://{HOST}:{scene.origin.port}/v1/mint").status_code == 200
    ca_dir = scene.ca.parent
    key = ca_dir / "ca.key"
    wait_until(lambda: any((scene.gw.data_dir / "certs").rglob("*.pem")), "a minted certificate persisted")
    cached = [p for p in (scene.gw.data_dir / "certs").rglob("*") if p.is_file()]
    modes = {str(p.relative_to(scene.gw.data_dir)): stat.S_IMODE(p.stat().st_mode) for p in [key, *cached]}
    assert all(mode == 0o600 for mode in modes.values()), modes
    dirs = [ca_dir, *(p for p in (scene.gw.data_dir / "certs").rglob("*") if p.is_dir()), scene.gw.data_dir / "certs"]
    open_dirs = {str(d): oct(stat.S_IMODE(d.stat().st_mode)) for d in dirs if d.stat().st_mode & 0o007}
    assert open_dirs == {}


def _admin_from(source: str, port: int) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.get(f"http://{source}:{port}/config_dump")


def test_admin_port_refuses_non_loopback_clients(scene: Scene) -> None:
    source = non_loopback_address()
    if source is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    assert httpx.get(f"http://127.0.0.1:{scene.admin_port}/config_dump", timeout=10).status_code == 200
    assert httpx.get(f"http://127.0.0.2:{scene.admin_port}/stats", timeout=10).status_code == 200  # still loopback
    refused = _admin_from(source, scene.admin_port)
    assert refused.status_code == 403
    assert "secret" not in refused.text.lower() and "listeners" not in refused.text
    assert f"admin request from {source} refused" in scene.gw.logs()


def test_admin_allow_cidr_lets_a_named_network_in(tmp_path: Path) -> None:
    source = non_loopback_address()
    if source is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "gw.yaml").write_text(
        "apiVersion: clrk.apoxy.dev/v1alpha1\nkind: EgressGateway\nmetadata: {name: eg}\n"
        "spec:\n  listeners:\n  - {name: http, protocol: HTTP}\n"
    )
    port = wildcard_port()
    args = ["--admin-addr", f"0.0.0.0:{port}", "--admin-allow-cidr", f"{source}/32", "--no-captures"]
    with own_ports(GatewayProcess(cfg, tmp_path / "data", extra_args=args)):
        allowed = _admin_from(source, port)
    assert allowed.status_code == 200
    assert isinstance(allowed.json(), dict)


def test_admin_allow_cidr_is_documented_in_help() -> None:
    out = subprocess.run([sys.executable, "-m", "egressproxy", "run", "--help"], capture_output=True, text=True)
    assert "--admin-allow-cidr" in out.stdout and "loopback" in out.stdout


def test_the_search_finds_every_spelling() -> None:
    """The needles are right: each spelling of a secret embedded in a larger value is found."""
    for secret in SECRETS:
        for prefix in (b"", b"x", b"xy"):
            assert leaks("b64", base64.b64encode(prefix + secret.encode() + b"tail"))
            assert leaks("b64url", base64.urlsafe_b64encode(prefix + secret.encode()))
        assert leaks("url", b"a=" + urllib.parse.quote(secret, safe="").encode())
    assert leaks("basic", b"Proxy-Authorization: Basic " + basic(PROXY_USER, PROXY_PASSWORD))
    assert not leaks("clean", b"nothing to see, <redacted>")



MITMWEB_ROUTE = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}]
  hostnames: [{HOST}]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {{name: from-config}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}}]
  secretRef: {{name: api-key}}
  target: Header
  headerName: Authorization
  valuePrefix: "Bearer "
---
apiVersion: v1
kind: Secret
metadata: {{name: api-key}}
stringData: {{token: {json.dumps(CONFIG_KEY)}}}
"""


def test_mitmweb_shows_the_request_as_sent_upstream_behind_its_token(
    tmp_path: Path, gateway_ca: tuple[Path, str], trust_secret: str, tls_origin: Callable[..., object]
) -> None:
    """mitmweb is the operator's inspection tool: its flow API shows the request as it went upstream, the
    injected credential included (docs/reliability.md, Secret hygiene), and only to a holder of web_password.
    The client's own credential, which the injection replaced, is not there."""
    from tests.e2e.test_interception import GATEWAY
    from tests.e2e.test_mitmweb import Mitmweb

    origin = tls_origin(HOST)
    config = tmp_path / "config"
    config.mkdir()
    for i, doc in enumerate((GATEWAY, MITMWEB_ROUTE, gateway_ca[1], trust_secret)):
        (config / f"{i:02d}.yaml").write_text(textwrap.dedent(doc))
    web = Mitmweb(config, tmp_path / "run")
    web.port, web.web_port = wildcard_port(), wildcard_port()
    web.start()
    try:
        web.wait_ready()
        verify = ssl.create_default_context(cafile=str(gateway_ca[0]))
        with httpx.Client(proxy=web.proxy_url, verify=verify, timeout=10) as client:
            r = client.get(f"https://{HOST}:{origin.port}/v1/x", headers={"authorization": f"Bearer {CLIENT_BEARER}"})
        assert r.status_code == 200, r.text
        assert r.json()["headers"]["authorization"] == f"Bearer {CONFIG_KEY}"  # really injected
        assert web.api("GET", "/flows", token=None).status_code == 403
        wait_until(lambda: any(f.get("response") and f["request"]["path"] == "/v1/x" for f in web.flows()),
                   "the flow in mitmweb")
        flows = json.dumps(web.flows()).encode()
        assert needles(CONFIG_KEY)["raw"] in flows
        assert not any(n in flows for n in needles(CLIENT_BEARER).values())
    finally:
        web.stop()
