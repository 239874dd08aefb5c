"""`egressproxy explain --json` and the running gateway agree, request by request: allowed or denied, and why.

Each row of the table is sent through the real gateway process (plain HTTP in absolute form, or CONNECT plus
TLS inside the tunnel) and given to the real `explain` command with the same configuration. A dry run that
said ALLOW where the gateway answers 403 `destination-address-denied` (the SSRF guard at dial time) is the
disagreement this file exists to catch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.rawproxy import client_context, connect, open_socket, read_response

pytestmark = pytest.mark.e2e

ALIASED = "[allowed.example.test, blocked.example.test, alias.example.test, static.example.test]"


def gateway_doc(policy: str) -> str:
    return f"""
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: {policy}
  listeners:
  - {{name: http, protocol: HTTP}}
  - {{name: https, protocol: HTTPS, tls: {{mode: Terminate, caCertRef: {{name: egress-ca}}}}}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {{name: origin-ca}}
    hostAliases:
    - ip: 127.0.0.1
      hostnames: {ALIASED}
"""


def routes(static_port: int) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api}}
spec:
  parentRefs: [{{name: eg, sectionName: http}}, {{name: eg, sectionName: https}}]
  hostnames: [allowed.example.test]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /v1}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: blocked}}
spec:
  parentRefs: [{{name: eg, sectionName: http}}, {{name: eg, sectionName: https}}]
  hostnames: [blocked.example.test]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressDenyPolicy
metadata: {{name: no-blocked}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: blocked}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: static}}
spec:
  parentRefs: [{{name: eg, sectionName: http}}]
  hostnames: [loopback-service.example.test]
  rules:
  - backendRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: loopback}}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: loopback}}
spec: {{type: Static, static: {{hosts: [{{host: 127.0.0.1, port: {static_port}}}]}}}}
"""


@dataclass(frozen=True)
class Outcome:
    allowed: bool
    reason: str | None  # x-egress-denied / x-egress-error, or explain's verdict reason on a denial

    def __str__(self) -> str:
        return "ALLOW" if self.allowed else f"DENY {self.reason}"


def _outcome(status: int, headers: dict[str, str]) -> Outcome:
    reason = headers.get("x-egress-denied") or headers.get("x-egress-error")
    return Outcome(status < 400 and reason is None, reason)


def through_gateway(gw, url: str, host_header: str | None, cafile: Path) -> Outcome:
    """The gateway's answer to a client sending `url` (absolute-form HTTP, or CONNECT then TLS)."""
    scheme, rest = url.split("://", 1)
    authority, _, path = rest.partition("/")
    path = "/" + path
    host = host_header or authority
    if scheme == "http":
        sock = open_socket(gw.host, gw.port)
        with sock:
            sock.sendall(f"GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            answer = read_response(sock)
        return _outcome(answer.status, answer.headers)
    sock, answer = connect(gw.host, gw.port, authority)
    if answer.status != 200:
        sock.close()
        return _outcome(answer.status, answer.headers)
    name = authority.rsplit(":", 1)[0].strip("[]")
    with client_context(str(cafile)).wrap_socket(sock, server_hostname=name) as tls:
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = read_response(tls)
    return _outcome(answer.status, answer.headers)


def through_explain(config: Path, url: str, host_header: str | None) -> Outcome:
    extra = ["--header", f"Host: {host_header}"] if host_header else []
    done = subprocess.run(
        [sys.executable, "-m", "egressproxy", "explain", "-c", str(config), "--json", url, *extra],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode in (0, 3), done.stdout + done.stderr
    verdict = json.loads(done.stdout)["verdict"]
    assert (done.returncode == 0) == verdict["allowed"]
    return Outcome(verdict["allowed"], None if verdict["allowed"] else verdict["reason"])


@pytest.fixture
def origins(plain_origin, tls_origin):
    plain = plain_origin(name="plain")
    tls = tls_origin("allowed.example.test", "alias.example.test", "127.0.0.1", name="tls")
    return plain, tls


# (defaultPolicy, url template, Host header, expected): {p} = plain origin port, {t} = TLS origin port
TABLE = [
    ("deny-all", "http://allowed.example.test:{p}/v1/models", None, "ALLOW"),
    ("deny-all", "https://allowed.example.test:{t}/v1/models", None, "ALLOW"),
    ("deny-all", "http://unrouted.example.test:{p}/", None, "DENY no-route"),
    ("deny-all", "https://unrouted.example.test:{t}/", None, "DENY no-route"),
    ("deny-all", "http://allowed.example.test:{p}/v2/models", None, "DENY no-route"),  # path rule miss
    ("deny-all", "http://blocked.example.test:{p}/", None, "DENY route-denied"),
    ("deny-all", "https://blocked.example.test:{t}/", None, "DENY route-denied"),
    ("deny-all", "https://allowed.example.test:{t}/v1/models", "blocked.example.test", "DENY host-mismatch"),
    ("deny-all", "http://loopback-service.example.test/", None, "ALLOW"),  # a Static Backend on loopback: trusted
    ("allow-all", "http://169.254.169.254/latest/meta-data", None, "DENY destination-address-denied"),
    ("allow-all", "http://127.0.0.1:{p}/", None, "DENY destination-address-denied"),
    ("allow-all", "https://127.0.0.1:{t}/", None, "DENY destination-address-denied"),
    ("allow-all", "http://alias.example.test:{p}/", None, "ALLOW"),  # hostAliases: trusted as configured
    ("allow-all", "https://alias.example.test:{t}/", None, "ALLOW"),
]


@pytest.mark.parametrize("policy", ["deny-all", "allow-all"])
def test_explain_and_the_gateway_agree_on_every_row(policy, gateway, gateway_ca, trust_secret, origins):
    plain, tls = origins
    gw = gateway(gateway_doc(policy), routes(plain.port), gateway_ca[1], trust_secret)
    config = gw.configs[0]
    rows = [(u.format(p=plain.port, t=tls.port), h, e) for pol, u, h, e in TABLE if pol == policy]
    disagreements = []
    for url, host_header, expected in rows:
        served = through_gateway(gw, url, host_header, gateway_ca[0])
        explained = through_explain(config, url, host_header)
        if not (str(served) == str(explained) == expected):
            disagreements.append(f"{url} Host={host_header}: gateway {served}, explain {explained}, expected {expected}")
    assert not disagreements, "\n".join(disagreements) + "\n" + gw.logs()[-3000:]
