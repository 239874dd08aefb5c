"""RegionAllowListPolicy through the real gateway: the region of a destination from the provider's region field,
the Backend label, the regional hostname and GeoIP; unknown regions; candidates outside the allowed regions
filtered before any is tried; Report mode; and `explain` showing the checks.

Every regional name is a hostAlias to 127.0.0.1, where a TLS origin with that name answers; the GeoIP database is
built by the test (tests/support/geoip.py).
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.geoip import write_country_db

pytestmark = pytest.mark.e2e

EU_HOST = "bedrock-runtime.eu-west-1.amazonaws.com"
US_HOST = "bedrock-runtime.us-east-1.amazonaws.com"
PLAIN_HOST = "api.example.test"  # no region in its name


def gateway_yaml(policy: str, extra: str = "") -> str:
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
    - {{ip: 127.0.0.1, hostnames: [{EU_HOST}, {US_HOST}, {PLAIN_HOST}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: direct}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}]
  hostnames: [{EU_HOST}, {US_HOST}, {PLAIN_HOST}]
  rules: [{{}}]
---
apiVersion: policy.egressproxy.io/v1alpha1
kind: RegionAllowListPolicy
metadata: {{name: regions}}
spec:
  targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}}]
{policy}
{extra}"""


def _client(gw, gateway_ca, auth: tuple[str, str] | None = None) -> httpx.Client:
    proxy = httpx.Proxy(gw.proxy_url, auth=auth) if auth else gw.proxy_url
    return httpx.Client(proxy=proxy, verify=ssl.create_default_context(cafile=str(gateway_ca[0])), timeout=10)


def _get(gw, gateway_ca, url: str) -> httpx.Response:
    with _client(gw, gateway_ca) as client:
        return client.get(url)


def _denied(response: httpx.Response) -> dict:
    assert response.status_code == 403, response.text
    assert response.headers["x-egress-denied"] == "region-not-allowed"
    return response.json()


def _origins(tls_origin):
    return tls_origin(EU_HOST, US_HOST, PLAIN_HOST, name="regional")


def test_the_regional_hostname_decides(gateway, gateway_ca, trust_secret, tls_origin):
    origin = _origins(tls_origin)
    policy = '  allowedRegions: ["eu-*"]\n'
    gw = gateway(gateway_yaml(policy), gateway_ca[1], trust_secret)
    ok = _get(gw, gateway_ca, f"https://{EU_HOST}:{origin.port}/model/invoke")
    assert ok.status_code == 200, ok.text + gw.logs()
    body = _denied(_get(gw, gateway_ca, f"https://{US_HOST}:{origin.port}/model/invoke"))
    assert body["policy"] == "RegionAllowListPolicy/default/regions"
    assert "region us-east-1 (from hostname) is not in allowedRegions [eu-*]" in body["error"]
    assert [path for _, path, _ in origin.requests] == ["/model/invoke"]  # the refused one never reached it
    assert 'egress_denials_total{reason="region-not-allowed"} 1.0' in gw.metrics()


def test_an_unknown_region_follows_unknown_region(gateway, gateway_ca, trust_secret, tls_origin):
    origin = _origins(tls_origin)
    deny = gateway(gateway_yaml('  allowedRegions: ["eu-*"]\n  unknownRegion: Deny\n'), gateway_ca[1], trust_secret)
    body = _denied(_get(deny, gateway_ca, f"https://{PLAIN_HOST}:{origin.port}/"))
    assert "region unknown (unknownRegion: denied)" in body["error"]
    allow = gateway(gateway_yaml('  allowedRegions: ["eu-*"]\n  unknownRegion: Allow\n'), gateway_ca[1], trust_secret)
    assert _get(allow, gateway_ca, f"https://{PLAIN_HOST}:{origin.port}/").status_code == 200


def test_geoip_of_the_resolved_address_decides_at_dial_time(gateway, gateway_ca, trust_secret, tls_origin, tmp_path):
    origin = _origins(tls_origin)
    db = write_country_db(tmp_path / "country.mmdb", {"127.0.0.0/8": ("EU", "DE")})
    europe = gateway(gateway_yaml(f'  allowedRegions: ["eu-*"]\n  geoIP: {{databasePath: {db}}}\n'), gateway_ca[1], trust_secret)
    assert _get(europe, gateway_ca, f"https://{PLAIN_HOST}:{origin.port}/").status_code == 200
    america = gateway(gateway_yaml(f'  allowedRegions: ["na-*"]\n  geoIP: {{databasePath: {db}}}\n'), gateway_ca[1], trust_secret)
    body = _denied(_get(america, gateway_ca, f"https://{PLAIN_HOST}:{origin.port}/"))
    assert f"{PLAIN_HOST}:{origin.port} (127.0.0.1): region eu-de (from geoip) is not in allowedRegions [na-*]" in body["error"]
    assert len(origin.requests) == 1


def _two_backends(eu_port: int, us_port: int) -> str:
    """A route whose two Static Backends (equal weight, one priority group) carry region labels."""
    backend = """
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata:
  name: {name}
  labels: {{topology.kubernetes.io/region: {region}}}
spec: {{type: Static, static: {{hosts: [{{host: 127.0.0.1, port: {port}}}]}}}}"""
    route = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: pooled}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [pool.example.test]
  rules:
  - backendRefs:
    - {group: gateway.kgateway.dev, kind: Backend, name: us-pool, weight: 1}
    - {group: gateway.kgateway.dev, kind: Backend, name: eu-pool, weight: 1}"""
    return (
        route
        + backend.format(name="us-pool", region="us-east-1", port=us_port)
        + backend.format(name="eu-pool", region="eu-central-1", port=eu_port)
    )


def test_a_candidate_outside_the_allowed_regions_is_never_tried(gateway, gateway_ca, trust_secret, tls_origin, tmp_path):
    """Two equal-weight Backends: the one labelled us-east-1 is filtered out before the choice, every time."""
    eu, us = tls_origin("127.0.0.1", name="eu"), tls_origin("127.0.0.1", name="us")
    gw = gateway(gateway_yaml('  allowedRegions: ["eu-*"]\n', _two_backends(eu.port, us.port)), gateway_ca[1], trust_secret)
    with _client(gw, gateway_ca) as client:
        for _ in range(6):
            response = client.get("https://pool.example.test/v1/models")
            assert response.status_code == 200, response.text + gw.logs()
            assert response.json()["origin"] == "eu"
    assert us.requests == []
    config = tmp_path / "explain"
    config.mkdir()
    (config / "gw.yaml").write_text(gateway_yaml('  allowedRegions: ["eu-*"]\n', _two_backends(eu.port, us.port)))
    (config / "secrets.yaml").write_text(gateway_ca[1] + "\n---\n" + trust_secret)
    out = subprocess.run(
        [sys.executable, "-m", "egressproxy", "explain", "-c", str(config), "https://pool.example.test/v1/models", "--no-resolve"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    checks = sorted(line for line in lines if line.startswith("check     region"))
    assert checks == [
        f"check     region RegionAllowListPolicy/default/regions: allow (127.0.0.1:{eu.port}: region eu-central-1 (from label) is in allowedRegions [eu-*])",
        f"check     region RegionAllowListPolicy/default/regions: deny (127.0.0.1:{us.port}: region us-east-1 (from label) is not in allowedRegions [eu-*])",
    ]
    assert [line for line in lines if line.startswith("upstream")] == [
        f"upstream  group 0: https://127.0.0.1:{eu.port} (default/eu-pool)"
    ]
    assert lines[-1] == "verdict   ALLOW: route by HTTPRoute/default/pooled"


def _ai_backend(eu_port: int, us_port: int) -> str:
    """Bedrock providers in two priority groups; the higher-priority one is in us-east-1 (its region field)."""
    return f"""
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
  ai:
    priorityGroups:
    - providers:
      - name: virginia
        bedrock: {{model: m, region: us-east-1, hostOverride: {{host: 127.0.0.1, port: {us_port}, scheme: http}}}}
    - providers:
      - name: ireland
        bedrock: {{model: m, region: eu-west-1, hostOverride: {{host: 127.0.0.1, port: {eu_port}, scheme: http}}}}"""


def test_the_providers_region_field_filters_failover_groups(gateway, gateway_ca, trust_secret, plain_origin, tmp_path):
    eu, us = plain_origin(name="eu"), plain_origin(name="us")
    gw = gateway(gateway_yaml('  allowedRegions: ["eu-*"]\n', _ai_backend(eu.port, us.port)), gateway_ca[1], trust_secret)
    with _client(gw, gateway_ca) as client:
        response = client.post("https://llm.example.test/model/m/converse", json={"messages": []})
    assert response.status_code == 200, response.text + gw.logs()
    assert response.json()["origin"] == "eu"
    assert us.requests == []
    config = tmp_path / "explain"
    config.mkdir()
    (config / "gw.yaml").write_text(gateway_yaml('  allowedRegions: ["eu-*"]\n', _ai_backend(eu.port, us.port)))
    (config / "secrets.yaml").write_text(gateway_ca[1] + "\n---\n" + trust_secret)
    out = subprocess.run(
        [sys.executable, "-m", "egressproxy", "explain", "-c", str(config), "https://llm.example.test/model/m/converse",
         "--method", "POST", "--json", "--no-resolve"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert [(c["region"], c["source"], c["verdict"]) for c in result["policyTrace"]] == [
        ("us-east-1", "provider", "deny"),
        ("eu-west-1", "provider", "allow"),
    ]
    assert [(u["provider"], u["group"]) for u in result["request"]["upstreams"]] == [("ireland", 1)]


def test_every_candidate_refused_is_region_not_allowed(gateway, gateway_ca, trust_secret, plain_origin):
    eu, us = plain_origin(name="eu"), plain_origin(name="us")
    gw = gateway(gateway_yaml('  allowedRegions: ["ap-*"]\n', _ai_backend(eu.port, us.port)), gateway_ca[1], trust_secret)
    with _client(gw, gateway_ca) as client:
        body = _denied(client.post("https://llm.example.test/model/m/converse", json={}))
    assert "region us-east-1 (from provider)" in body["error"]
    assert eu.requests == [] and us.requests == []


def test_report_mode_lets_the_request_pass_and_counts_it(gateway, gateway_ca, trust_secret, tls_origin):
    origin = _origins(tls_origin)
    gw = gateway(gateway_yaml('  allowedRegions: ["eu-*"]\n  enforcementMode: Report\n'), gateway_ca[1], trust_secret)
    response = _get(gw, gateway_ca, f"https://{US_HOST}:{origin.port}/")
    assert response.status_code == 200, response.text
    metrics = gw.metrics()
    found = re.search(
        r'^egress_policy_reports_total\{policy="RegionAllowListPolicy/default/regions",reason="region-not-allowed"\} (\S+)$',
        metrics, re.M,
    )
    assert found is not None and float(found.group(1)) == 1.0, re.findall("^egress_policy_reports.*$", metrics, re.M)
    assert "region-not-allowed" not in re.findall(r'egress_denials_total\{reason="([^"]+)"\}', metrics)
    assert "report: RegionAllowListPolicy/default/regions would deny" in gw.logs()


def test_a_missing_geoip_database_is_a_validation_problem(tmp_path: Path, gateway_ca, trust_secret):
    config = tmp_path / "cfg"
    config.mkdir()
    text = gateway_yaml('  allowedRegions: ["eu-*"]\n  geoIP: {databasePath: /nonexistent/x.mmdb}\n')
    (config / "gw.yaml").write_text(text)
    line = text.splitlines().index("  geoIP: {databasePath: /nonexistent/x.mmdb}") + 1
    (config / "secrets.yaml").write_text(gateway_ca[1] + "\n---\n" + trust_secret)
    out = subprocess.run([sys.executable, "-m", "egressproxy", "validate", "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stdout.splitlines()[0] == (
        f"{config / 'gw.yaml'}:{line}: RegionAllowListPolicy/default/regions: spec.geoIP.databasePath: "
        "cannot open the GeoIP database '/nonexistent/x.mmdb': No such file or directory"
    )


def test_explain_shows_a_geoip_region_pending_until_the_dial(tmp_path: Path, gateway_ca, trust_secret):
    """Line by line: the candidate is pending before DNS, the dial's destination check decides by GeoIP."""
    db = write_country_db(tmp_path / "country.mmdb", {"127.0.0.0/8": ("EU", "DE")})
    config = tmp_path / "cfg"
    config.mkdir()
    (config / "gw.yaml").write_text(gateway_yaml(f'  allowedRegions: ["na-*"]\n  geoIP: {{databasePath: {db}}}\n'))
    (config / "secrets.yaml").write_text(gateway_ca[1] + "\n---\n" + trust_secret)
    out = subprocess.run(
        [sys.executable, "-m", "egressproxy", "explain", "-c", str(config), f"https://{PLAIN_HOST}/v1/models"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 3, out.stdout + out.stderr
    assert out.stdout.splitlines() == [
        "gateway   default/eg",
        f"target    https://{PLAIN_HOST}/v1/models",
        "CONNECT   allowed (listener https)",
        "listener  https  action intercept",
        "route     default/direct",
        "request   GET /v1/models: route default/direct rule 0",
        f"upstream  group 0: https://{PLAIN_HOST}:443 (requested destination)",
        f"check     region RegionAllowListPolicy/default/regions: pending ({PLAIN_HOST}:443: region unknown before DNS; "
        "the GeoIP database decides at dial time)",
        f"dial      {PLAIN_HOST}:443: refused",
        "policy    RegionAllowListPolicy/default/regions (gateway): deny",
        f"verdict   DENY 403: region-not-allowed by RegionAllowListPolicy/default/regions ({PLAIN_HOST}:443 (127.0.0.1): "
        "region eu-de (from geoip) is not in allowedRegions [na-*])",
    ]
