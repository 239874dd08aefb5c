"""The load test's every-policy-on config (loadtest/full_policy.py) is valid and every policy in it is enforced on
the requests the load test sends: intercepted HTTPS and plain HTTP to an IP-literal loopback origin through the
catch-all route, no proxy credentials (the load-test client sends none).

What each check proves: the origin receives the injected `Authorization`; the store holds a capture record with
both bodies; the access-log file gets a line; the CEL rule is evaluated per request (a request with its header is
refused `rbac-denied` on the same gateway); the rate limit counts these requests (the same config with a limit of
3 refuses the 4th with 429); the region check decides them by GeoIP (with `unknownRegion: Deny` only a GeoIP
answer lets 127.0.0.1 pass, and the same config allowing `na-*` refuses them `region-not-allowed` from geoip).
And the injected secret reaches no log, access-log line, capture, metric or `/config_dump`.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtest.full_policy import DENY_HEADER, FullPolicyConfig, write_full_policy_config
from tests.support.gateway import GatewayProcess, free_port
from tests.support.origins import HttpOrigin
from tests.support.pki import TestCA

pytestmark = pytest.mark.e2e

KINDS = {"EgressGateway", "HTTPRoute", "TLSRoute", "CredentialInjectionPolicy", "LoggingPolicy", "HTTPListenerPolicy",
         "RateLimitPolicy", "RegionAllowListPolicy"}


@dataclass
class Bench:
    config: FullPolicyConfig
    gw: GatewayProcess
    tls: HttpOrigin
    plain: HttpOrigin
    client_ca: Path

    def client(self) -> httpx.Client:
        return httpx.Client(proxy=self.gw.proxy_url, verify=ssl.create_default_context(cafile=str(self.client_ca)),
                            timeout=10)

    def https(self, path: str) -> str:
        return f"https://127.0.0.1:{self.tls.port}{path}"


def write_config(tmp: Path, origin_ca: TestCA, gateway_ca: tuple[Path, str], **overrides: Any) -> FullPolicyConfig:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "origin-ca.crt").write_bytes(origin_ca.cert_pem)
    (tmp / "ca-secret.yaml").write_text(gateway_ca[1])
    return write_full_policy_config(tmp, origin_ca=tmp / "origin-ca.crt", passthrough_port=free_port(),
                                    gateway_ca_secret=tmp / "ca-secret.yaml", **overrides)


@pytest.fixture
def bench(tmp_path: Path, origin_ca: TestCA, gateway_ca: tuple[Path, str],
          tls_origin: Callable[..., HttpOrigin], plain_origin: Callable[..., HttpOrigin]) -> Iterator[Callable[..., Bench]]:
    """Start a gateway on the full-policy config (with `overrides` for write_full_policy_config) and two origins."""
    running: list[GatewayProcess] = []

    def start(**overrides: Any) -> Bench:
        config = write_config(tmp_path / f"bench-{len(running)}", origin_ca, gateway_ca, **overrides)
        gw = GatewayProcess(config.config_dir, tmp_path / f"data-{len(running)}",
                            extra_args=["--secrets-dir", str(config.secrets_dir)])
        running.append(gw)
        gw.start()
        return Bench(config, gw, tls_origin("127.0.0.1"), plain_origin(), gateway_ca[0])

    yield start
    for gw in running:
        gw.stop()


def wait_for(fetch: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fetch()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"no {what} after {timeout:.0f}s")


def captures(data_dir: Path) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "egressproxy", "captures", "--data-dir", str(data_dir), "--json",
                          "--limit", "100"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def access_lines(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def test_every_object_of_the_generated_config_is_programmed(tmp_path: Path, origin_ca: TestCA,
                                                            gateway_ca: tuple[Path, str]) -> None:
    config = write_config(tmp_path, origin_ca, gateway_ca)
    out = subprocess.run([sys.executable, "-m", "egressproxy", "validate", *config.run_args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if "Programmed=" in line]
    assert {row[0].split("/")[0] for row in rows} == KINDS, out.stdout
    assert all("Programmed=True" in row for row in rows), out.stdout


def test_every_policy_applies_to_the_loadtest_requests(bench: Callable[..., Bench]) -> None:
    b = bench()
    token = b.config.token
    with b.client() as client:
        secure = client.get(b.https("/bench-intercept"), headers={"authorization": "Bearer workload-own"})
        plain = client.get(f"http://127.0.0.1:{b.plain.port}/bench-plain")
        refused = client.get(b.https("/bench-cel"), headers={DENY_HEADER: "1"})
    # GeoIP region: unknownRegion is Deny, so 127.0.0.1 passes only because GeoIP placed it in eu-de.
    assert secure.status_code == 200, secure.text + b.gw.logs()
    assert plain.status_code == 200, plain.text + b.gw.logs()
    # Credential injection, on both listeners (the workload's own credential replaced).
    seen = {path: headers for _, path, headers in b.tls.requests + b.plain.requests}
    assert {k.lower(): v for k, v in seen["/bench-intercept"].items()}["authorization"] == f"Bearer {token}"
    assert {k.lower(): v for k, v in seen["/bench-plain"].items()}["authorization"] == f"Bearer {token}"
    # CEL: the celValidation rule ran on the request and refused it before it went upstream.
    assert refused.status_code == 403 and refused.headers["x-egress-denied"] == "rbac-denied", refused.text
    assert "/bench-cel" not in seen
    # Capture: a record with both bodies (the origin's JSON echo, the credential scrubbed from it).
    records = wait_for(lambda: [r for r in captures(b.gw.data_dir) if (r.get("url") or "").endswith("/bench-intercept")],
                       "capture record")
    assert records[0]["status"] == 200 and records[0]["response"]["body"], records[0]
    assert records[0]["request"]["headers"]["authorization"] == "[REDACTED]"
    # Access log: one line per request, the denial included.
    wanted = {"/bench-intercept", "/bench-plain", "/bench-cel"}
    wait_for(lambda: {ln.get("path") for ln in access_lines(b.config.access_log)} >= wanted, "three access-log lines")
    # Metrics: every request counted, the CEL denial by reason.
    metrics = b.gw.metrics()
    assert 'egress_denials_total{reason="rbac-denied"} 1.0' in metrics, metrics
    assert 'decision="allow"' in metrics and "egress_requests_total" in metrics
    # The secret reaches no log, access log, capture, metric or config dump.
    dump = b.gw.admin("/config_dump").text
    stored = json.dumps(captures(b.gw.data_dir))
    for where, text in (("log", b.gw.logs()), ("access log", b.config.access_log.read_text()), ("captures", stored),
                        ("metrics", metrics), ("config_dump", dump)):
        assert token not in text, where


def test_the_rate_limit_counts_the_loadtest_requests(bench: Callable[..., Bench]) -> None:
    b = bench(rate_limit_requests=3, rate_limit_window="1h")
    with b.client() as client:
        statuses = [client.get(b.https(f"/n{i}")).status_code for i in range(4)]
        last = client.get(b.https("/n4"))
    assert statuses == [200, 200, 200, 429], statuses
    assert last.headers.get("x-egress-denied") == "rate-limited", last.text


def test_the_region_check_decides_the_loadtest_requests_by_geoip(bench: Callable[..., Bench]) -> None:
    b = bench(allowed_region="na-*")
    with b.client() as client:
        secure = client.get(b.https("/region"))
        plain = client.get(f"http://127.0.0.1:{b.plain.port}/region")
    for response in (secure, plain):
        assert response.status_code == 403 and response.headers["x-egress-denied"] == "region-not-allowed", response.text
        assert "region eu-de (from geoip)" in response.json()["error"]
    assert not b.tls.requests and not b.plain.requests
