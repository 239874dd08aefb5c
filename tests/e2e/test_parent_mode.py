"""Parent mode (DESIGN.md 4.1): the gateway sends traffic to its original destination through a parent proxy.

The parent here is a bare mitmdump that tunnels everything untouched (`ignore_hosts` .*) and requires proxy
credentials, so a request only succeeds when our gateway CONNECTs to it by hostname with the Secret's
credentials. The origin is named `localhost`, which the parent resolves by itself.

Plain HTTP goes to the parent absolute-form. Its parent refuses every CONNECT (403), as Squid's default config
does for port 80 (`http_access deny CONNECT !SSL_ports`): a mitmdump script stands in for Squid, so the test
needs no package install and runs unprivileged; what it checks (no CONNECT for plain HTTP, the credentials on
the absolute-form request) is the part of Squid's behaviour the gateway depends on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.gateway import free_port
from tests.support.origins import HttpOrigin

pytestmark = pytest.mark.e2e

MITMDUMP = Path(sys.executable).with_name("mitmdump")


REFUSE_CONNECT = """
from mitmproxy import http


def http_connect(flow: http.HTTPFlow) -> None:
    flow.response = http.Response.make(403, b"CONNECT refused by policy", {"x-parent": "refused-connect"})
"""


def _start_parent(tmp_path: Path, *args: str):
    port = free_port()
    log = open(tmp_path / "parent.log", "wb")
    proc = subprocess.Popen(
        [str(MITMDUMP), "--mode", f"regular@127.0.0.1:{port}", "--set", "proxyauth=child:s3cret-parent-pass",
         "--set", f"confdir={tmp_path / 'parent-conf'}", *args],
        stdout=log, stderr=subprocess.STDOUT,
    )
    return port, proc


@pytest.fixture
def parent(tmp_path: Path):
    port, proc = _start_parent(tmp_path, "--set", "ignore_hosts=.*", "-q")
    yield from _serve_parent(port, proc)


@pytest.fixture
def connect_refusing_parent(tmp_path: Path):
    """A parent that answers every CONNECT with 403 and forwards absolute-form HTTP (with its credentials)."""
    script = tmp_path / "refuse_connect.py"
    script.write_text(REFUSE_CONNECT)
    port, proc = _start_parent(tmp_path, "-s", str(script), "--flow-detail", "1")
    yield from _serve_parent(port, proc)


def _serve_parent(port: int, proc: subprocess.Popen[bytes]):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with __import__("socket").create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def _child_config(parent_port: int, password: str, listener: str) -> list[str]:
    listeners = {
        "intercept": "  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: egress-ca}}}",
        "passthrough": "  - {name: pass, protocol: TLS, tls: {mode: Passthrough}}",
        "http": "  - {name: http, protocol: HTTP}",
    }[listener]
    route = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n"
        "spec:\n  parentRefs: [{name: eg}]\n  hostnames: [localhost]\n"
        if listener in ("intercept", "http")
        else "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {name: r}\n"
        "spec:\n  parentRefs: [{name: eg}]\n  hostnames: [localhost]\n"
    )
    gateway = (
        "apiVersion: clrk.apoxy.dev/v1alpha1\nkind: EgressGateway\nmetadata: {name: eg}\nspec:\n"
        "  defaultPolicy: deny-all\n  parentRef: {name: parent}\n"
        "  upstreamTLS: {additionalTrustBundleSecretRef: {name: origin-ca}}\n"
        f"  listeners:\n{listeners}\n"
    )
    backend = (
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: Backend\nmetadata: {name: parent}\nspec:\n"
        f"  type: Static\n  static: {{hosts: [{{host: 127.0.0.1, port: {parent_port}}}]}}\n"
        "  parent: {authSecretRef: {name: parent-auth}}\n"
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: parent-auth}\n"
        f"stringData: {{username: child, password: {password}}}\n"
    )
    return [gateway, route, backend]


def _curl(gw, url: str, cacert: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "-v", "--max-time", "10", "--proxy", gw.proxy_url, "--cacert", str(cacert), url],
        capture_output=True, text=True, timeout=20,
    )


def test_intercepted_request_is_re_encrypted_to_the_origin_through_the_parent(gateway, gateway_ca, trust_secret, tls_origin, parent):
    origin = tls_origin("localhost")
    gw = gateway(*_child_config(parent, "s3cret-parent-pass", "intercept"), gateway_ca[1], trust_secret)
    out = _curl(gw, f"https://localhost:{origin.port}/via-parent", gateway_ca[0])
    assert out.returncode == 0, out.stderr + gw.logs()
    assert json.loads(out.stdout)["path"] == "/via-parent"
    assert "issuer: CN=egress-ca" in out.stderr  # intercepted by the child


def test_passthrough_stays_end_to_end_through_the_parent(gateway, gateway_ca, trust_secret, tls_origin, parent, origin_ca, tmp_path):
    origin = tls_origin("localhost")
    ca = tmp_path / "origin-ca.pem"
    ca.write_bytes(origin_ca.cert_pem)
    gw = gateway(*_child_config(parent, "s3cret-parent-pass", "passthrough"), gateway_ca[1], trust_secret)
    out = _curl(gw, f"https://localhost:{origin.port}/pass", ca)
    assert out.returncode == 0, out.stderr + gw.logs()
    assert "issuer: CN=egressproxy test origins" in out.stderr  # the origin's own certificate
    assert json.loads(out.stdout)["path"] == "/pass"


def test_wrong_parent_credentials_fail_closed(gateway, gateway_ca, trust_secret, tls_origin, parent):
    origin = tls_origin("localhost")
    gw = gateway(*_child_config(parent, "wrong-password", "intercept"), gateway_ca[1], trust_secret)
    out = _curl(gw, f"https://localhost:{origin.port}/x", gateway_ca[0])
    assert "HTTP/2 502" in out.stderr or "HTTP/1.1 502" in out.stderr, out.stderr
    assert "x-egress-error: upstream-unreachable" in out.stderr
    assert origin.requests == []
    assert "s3cret" not in gw.logs() and "wrong-password" not in gw.logs()


def test_a_rotated_mounted_secret_is_used_for_the_next_request_without_restart(gateway, gateway_ca, trust_secret, tls_origin, parent, tmp_path):
    """`--secrets-dir DIR/<name>/<key>` (a mounted Secret volume) is watched: a new password is in use within a
    reload, with no restart."""
    origin = tls_origin("localhost")
    secrets_dir = tmp_path / "secrets"
    (secrets_dir / "parent-auth").mkdir(parents=True)
    (secrets_dir / "parent-auth" / "username").write_text("child")
    (secrets_dir / "parent-auth" / "password").write_text("stale-password")
    gateway_doc, route, backend = _child_config(parent, "unused", "intercept")
    backend = backend.split("---")[0]  # the Secret comes from the mounted folder instead
    gw = gateway(gateway_doc, route, backend, gateway_ca[1], trust_secret, extra_args=["--secrets-dir", str(secrets_dir)])
    url = f"https://localhost:{origin.port}/rotated"
    stale = _curl(gw, url, gateway_ca[0]).stderr
    assert "< HTTP/2 502" in stale or "< HTTP/1.1 502" in stale, stale
    (secrets_dir / "parent-auth" / "password").write_text("s3cret-parent-pass")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = _curl(gw, url, gateway_ca[0])
        if out.returncode == 0 and json.loads(out.stdout).get("path") == "/rotated":
            break
        time.sleep(0.3)
    else:
        raise AssertionError(out.stdout + gw.logs())
    assert gw.proc is not None and gw.proc.poll() is None
    assert "stale-password" not in gw.logs() and "s3cret-parent-pass" not in gw.logs()


@pytest.fixture
def plain_origin():
    with HttpOrigin("127.0.0.1") as origin:
        yield origin


def test_plain_http_goes_to_the_parent_absolute_form_with_credentials(gateway, trust_secret, connect_refusing_parent, plain_origin):
    """No CONNECT for plain HTTP: the parent gets `GET http://localhost:PORT/path` with Proxy-Authorization."""
    gw = gateway(*_child_config(connect_refusing_parent, "s3cret-parent-pass", "http"), trust_secret)
    url = f"http://localhost:{plain_origin.port}/plain-via-parent?q=1"
    out = subprocess.run(
        ["curl", "-sS", "-v", "--max-time", "10", "--proxy", gw.proxy_url, url], capture_output=True, text=True, timeout=20
    )
    assert out.returncode == 0, out.stderr + gw.logs()
    assert "< HTTP/1.1 200" in out.stderr, out.stderr
    assert json.loads(out.stdout)["path"] == "/plain-via-parent?q=1"
    [(method, path, headers)] = plain_origin.requests
    assert (method, path) == ("GET", "/plain-via-parent?q=1")
    assert headers["Host"] == f"localhost:{plain_origin.port}"
    assert not any(k.lower() == "proxy-authorization" for k in headers)  # the parent consumed its credentials
    assert "s3cret" not in gw.logs()


def test_plain_http_with_wrong_parent_credentials_fails_closed(gateway, trust_secret, connect_refusing_parent, plain_origin):
    """The parent's 407 is about the gateway's credentials: the client gets 502, never the parent's challenge."""
    gw = gateway(*_child_config(connect_refusing_parent, "wrong-password", "http"), trust_secret)
    out = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "10", "--proxy", gw.proxy_url, f"http://localhost:{plain_origin.port}/x"],
        capture_output=True, text=True, timeout=20,
    )
    assert out.stdout.startswith("HTTP/1.1 502"), out.stdout + out.stderr
    assert "x-egress-error: upstream-unreachable" in out.stdout
    assert "proxy-authenticate" not in out.stdout.lower()
    assert plain_origin.requests == []
    assert "wrong-password" not in gw.logs()
