"""Operating the gateway: readiness, metrics, config dump, and hot reload (files, POST /reload, SIGHUP)."""

from __future__ import annotations

import signal
import ssl
import textwrap
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e

GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg, namespace: egress}
spec:
  defaultPolicy: deny-all
  listeners:
  - name: https
    protocol: HTTPS
    tls: {mode: Terminate, caCertRef: {name: egress-ca, namespace: default}}
  otlp:
    endpoint: https://otel.example.test
    headers: {authorization: "Bearer otlp-header-secret-123"}
  upstreamTLS:
    additionalTrustBundleSecretRef: {name: origin-ca, namespace: default}
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [a.example.test, b.example.test]
"""

ROUTE_A = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route-a, namespace: egress}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [a.example.test]
  rules: [{}]
---
apiVersion: v1
kind: Secret
metadata: {name: api-token, namespace: egress}
stringData: {token: sk-test-very-secret-value}
"""

ROUTE_B = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route-b, namespace: egress}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [b.example.test]
  rules: [{}]
"""


def _wait_for(predicate, timeout: float = 10.0, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


@pytest.fixture
def running(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin("a.example.test", "b.example.test")
    gw = gateway(GATEWAY, ROUTE_A, gateway_ca[1], trust_secret)
    client = httpx.Client(proxy=gw.proxy_url, verify=ssl.create_default_context(cafile=str(gateway_ca[0])), timeout=10)
    yield gw, origin, client
    client.close()


def _status(client: httpx.Client, host: str, port: int) -> int:
    """The status the client sees; a CONNECT refused by the gateway surfaces in httpx as a ProxyError."""
    try:
        return client.get(f"https://{host}:{port}/").status_code
    except httpx.ProxyError as e:
        return int(str(e).split()[0])


def test_ready_metrics_and_config_dump(running):
    gw, origin, client = running
    assert httpx.get(f"http://127.0.0.1:{gw.ready_port}/ready", timeout=5).status_code == 200
    assert _status(client, "a.example.test", origin.port) == 200
    assert _status(client, "b.example.test", origin.port) == 403
    metrics = gw.metrics()
    assert (
        'egress_requests_total{backend="none",decision="allow",gateway="egress/eg",listener="https",'
        'namespace="unknown",route="egress/route-a",serviceaccount="unknown",status_class="2xx"} 1.0'
    ) in metrics
    assert 'egress_denials_total{reason="no-route"} 1.0' in metrics
    dump = gw.admin("/config_dump")
    assert dump.status_code == 200
    body = dump.text
    assert dump.json()["gateway"]["ref"] == "EgressGateway/egress/eg"
    for secret in ("sk-test-very-secret-value", "otlp-header-secret-123", "PRIVATE KEY"):
        assert secret not in body


def test_identity_from_proxy_authorization_labels_metrics(running, gateway_ca):
    gw, origin, _ = running
    proxy = httpx.Proxy(gw.proxy_url, auth=("team-a/billing", "unused"))
    verify = ssl.create_default_context(cafile=str(gateway_ca[0]))
    with httpx.Client(proxy=proxy, verify=verify, timeout=10) as c:
        assert c.get(f"https://a.example.test:{origin.port}/").status_code == 200
    metrics = gw.metrics()
    assert 'namespace="team-a"' in metrics and 'serviceaccount="billing"' in metrics


def test_route_added_to_the_files_takes_effect_without_restart(running):
    gw, origin, client = running
    assert _status(client, "b.example.test", origin.port) == 403
    (gw.configs[0] / "10-route-b.yaml").write_text(textwrap.dedent(ROUTE_B))
    assert _wait_for(lambda: _status(client, "b.example.test", origin.port) == 200), gw.logs()
    assert gw.proc is not None and gw.proc.poll() is None
    assert gw.admin("/stats").json()["generation"] == 2


def test_broken_file_leaves_the_old_config_serving_and_the_error_visible(running):
    gw, origin, client = running
    (gw.configs[0] / "20-broken.yaml").write_text("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: broken}\nspec:\n  hostnamez: [x]\n")
    assert _wait_for(lambda: gw.admin("/stats").json()["last_reload"]["ok"] is False), gw.logs()
    stats = gw.admin("/stats").json()
    assert stats["generation"] == 1
    assert any("20-broken.yaml:5: HTTPRoute/default/broken: spec.hostnamez: unknown field" in p for p in stats["last_reload"]["problems"])
    assert _status(client, "a.example.test", origin.port) == 200
    assert 'egress_config_reloads_total{result="rejected"} 1.0' in gw.metrics()
    assert "spec.hostnamez: unknown field" in gw.logs()
    reload = gw.admin("/reload", method="POST")
    assert reload.status_code == 400 and reload.json()["ok"] is False


def test_post_reload_and_sighup_apply_a_new_config(running):
    gw, origin, client = running
    gw_dir = gw.configs[0]
    (gw_dir / "10-route-b.yaml").write_text(textwrap.dedent(ROUTE_B))
    reload = gw.admin("/reload", method="POST")
    assert reload.status_code == 200 and reload.json()["ok"] is True
    assert _status(client, "b.example.test", origin.port) == 200
    (gw_dir / "10-route-b.yaml").unlink()
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGHUP)
    assert _wait_for(lambda: _status(client, "b.example.test", origin.port) == 403), gw.logs()


def test_invalid_config_at_start_exits_1_with_the_problem_lines(gateway):
    gw = gateway("apiVersion: clrk.apoxy.dev/v1alpha1\nkind: EgressGateway\nmetadata: {name: eg}\nspec:\n  listeners: []\n", wait=False)
    assert gw.proc is not None
    assert gw.proc.wait(timeout=20) == 1
    assert "EgressGateway/default/eg: spec.listeners: must have at least 1 item(s)" in gw.logs()


def test_unsupported_fields_are_warned_on_every_load(running):
    """A TrafficPolicy CSRF check is valid but not enforced by this build: each accepted load says so, once."""
    gw, _, _ = running
    (gw.configs[0] / "20-csrf.yaml").write_text(
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: csrf, namespace: egress}\n"
        "spec:\n  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}]\n  csrf: {percentageEnabled: 100}\n"
    )
    warning = (
        "TrafficPolicy/egress/csrf is not enforced in full (Programmed=False, Unsupported): "
        "spec.csrf is validated but not enforced by this build"
    )
    assert gw.admin("/reload", method="POST").json()["ok"] is True
    assert _wait_for(lambda: gw.logs().count(warning) == 1), gw.logs()
    assert gw.admin("/reload", method="POST").json()["ok"] is True
    assert _wait_for(lambda: gw.logs().count(warning) == 2), gw.logs()
    assert "HTTPRoute/egress/route-a is not enforced" not in gw.logs()
