"""An AI Backend's request goes to its first priority group's provider (hostOverride host, port and scheme).

The route names `llm.example.test`; the gateway sends the request to the provider instead: a local model server
on loopback, which the SSRF guard lets through because a hostOverride is a configured address (trusted like
a Static Backend). The lower-priority provider is a fallback and sees nothing while the first one answers.
"""

from __future__ import annotations

import json
import re
import ssl

import httpx
import pytest

pytestmark = pytest.mark.e2e


def config(primary: str, fallback_port: int) -> str:
    return backend_config(
        f"""
    priorityGroups:
    - providers:
      - name: local
        openai:
          model: local-model
          hostOverride: {primary}
    - providers:
      - name: fallback
        openai:
          model: other
          hostOverride: {{host: 127.0.0.1, port: {fallback_port}, scheme: http}}
"""
    )


def backend_config(ai: str) -> str:
    """The gateway, the route and a Backend `ai` whose block is `ai` (indented under `ai:`)."""
    return f"""
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners:
  - {{name: https, protocol: HTTPS, tls: {{mode: Terminate, caCertRef: {{name: egress-ca}}}}}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {{name: origin-ca}}
    hostAliases:
    - {{ip: 127.0.0.1, hostnames: [llm.example.test]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: llm}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}]
  hostnames: [llm.example.test]
  rules:
  - backendRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: ai}}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: ai}}
spec:
  type: AI
  ai:{ai}"""


def _post(gw, gateway_ca) -> httpx.Response:
    with httpx.Client(proxy=gw.proxy_url, verify=ssl.create_default_context(cafile=str(gateway_ca[0])), timeout=10) as client:
        return client.post("https://llm.example.test/v1/chat/completions", json={"model": "local-model", "messages": []})


def _requests_by_backend(gw) -> dict[str, float]:
    found = re.findall(r'^egress_requests_total\{([^}]*)\} ([0-9.]+)$', gw.metrics(), re.M)
    out: dict[str, float] = {}
    for labels, value in found:
        backend = re.search(r'backend="([^"]*)"', labels)
        if backend:
            out[backend.group(1)] = out.get(backend.group(1), 0) + float(value)
    return out


def test_plain_http_host_override_on_loopback_takes_the_request(gateway, gateway_ca, trust_secret, plain_origin):
    local, fallback = plain_origin(name="local-model"), plain_origin(name="fallback")
    primary = f"{{host: 127.0.0.1, port: {local.port}, scheme: http}}"
    gw = gateway(config(primary, fallback.port), gateway_ca[1], trust_secret)
    response = _post(gw, gateway_ca)
    assert response.status_code == 200, response.text + gw.logs()
    seen = response.json()
    assert (seen["origin"], seen["path"]) == ("local-model", "/v1/chat/completions")
    assert seen["headers"]["host"] == f"127.0.0.1:{local.port}"
    assert json.loads(seen["body"])["model"] == "local-model"
    assert fallback.requests == []
    assert _requests_by_backend(gw).get("default/ai") == 1.0  # the flow record names the Backend ns/name


def test_tls_host_override_is_verified_against_the_provider_address(gateway, gateway_ca, trust_secret, tls_origin, plain_origin):
    local, fallback = tls_origin("127.0.0.1", name="local-tls"), plain_origin(name="fallback")
    primary = f"{{host: 127.0.0.1, port: {local.port}}}"  # scheme defaults to https
    gw = gateway(config(primary, fallback.port), gateway_ca[1], trust_secret)
    response = _post(gw, gateway_ca)
    assert response.status_code == 200, response.text + gw.logs()
    assert response.json()["origin"] == "local-tls"
    assert fallback.requests == []


def test_kgateway_v20_multipool_dials_its_first_pools_host_override(gateway, gateway_ca, trust_secret, plain_origin):
    """kgateway v2.0's shape (`multipool.priorities[].pool[]`, the provider nested under `provider`,
    `hostOverride` beside it) takes the same path as the seeds' priority groups."""
    local, fallback = plain_origin(name="local-model"), plain_origin(name="fallback")
    ai = f"""
    multipool:
      priorities:
      - pool:
        - provider: {{openai: {{model: local-model}}}}
          hostOverride: {{host: 127.0.0.1, port: {local.port}, scheme: http}}
      - pool:
        - provider: {{openai: {{model: other}}}}
          hostOverride: {{host: 127.0.0.1, port: {fallback.port}, scheme: http}}
"""
    gw = gateway(backend_config(ai), gateway_ca[1], trust_secret)
    response = _post(gw, gateway_ca)
    assert response.status_code == 200, response.text + gw.logs()
    assert response.json()["origin"] == "local-model"
    assert fallback.requests == []


def test_kgateway_v21_llm_level_host_and_port_are_dialled_over_tls(gateway, gateway_ca, trust_secret, tls_origin):
    """kgateway v2.1's shape (`host` and `port` beside the provider block, no scheme: https), verified against
    the provider address like a seed hostOverride."""
    local = tls_origin("127.0.0.1", name="local-tls")
    ai = f"""
    llm:
      host: 127.0.0.1
      port: {local.port}
      openai: {{model: local-model}}
"""
    gw = gateway(backend_config(ai), gateway_ca[1], trust_secret)
    response = _post(gw, gateway_ca)
    assert response.status_code == 200, response.text + gw.logs()
    assert response.json()["origin"] == "local-tls"
