"""External auth through the real gateway against a real ext_authz gRPC server on loopback
(tests/support/ext_authz.py): allow with a header the origin sees, deny with the service's own response or the
gateway's JSON, the service down (fail closed; failOpen passes), a slow service (timeout), `disable` at route
scope, Report mode counting, and what the service is sent (never a credential the gateway injects)."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator

import httpx
import pytest

from tests.support.ext_authz import ExtAuthzServer
from tests.support.gateway import free_port

pytestmark = pytest.mark.e2e

HOST = "api.example.test"
SERVICE = "authz.auth.svc.cluster.local"
INJECTED = "injected-secret-value-7d1e"


def gateway_yaml(port: int, extension: str = "", policy: str = "") -> str:
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
    - {{ip: 127.0.0.1, hostnames: [{HOST}, {SERVICE}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}]
  hostnames: [{HOST}]
  rules:
  - name: open
    matches: [{{path: {{type: PathPrefix, value: /open}}}}]
  - name: checked
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: GatewayExtension
metadata: {{name: authz}}
spec:
  type: ExtAuth
  extAuth:
    grpcService: {{backendRef: {{name: authz, namespace: auth, port: {port}}}}}
    timeout: 500ms
{extension}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: authz-check}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}}]
  extAuth:
    extensionRef: {{name: authz}}
    contextExtensions: {{team: payments}}
{policy}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: open-rule}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api, sectionName: open}}]
  extAuth: {{disable: {{}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: upstream-key}}
stringData: {{token: {INJECTED}}}
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {{name: upstream-key}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}}]
  secretRef: {{name: upstream-key}}
  target: Header
  headerName: x-upstream-key
"""


@pytest.fixture
def authz() -> Iterator[ExtAuthzServer]:
    with ExtAuthzServer() as server:
        yield server


def _client(gw, gateway_ca, identity: str | None = None) -> httpx.Client:
    proxy = httpx.Proxy(gw.proxy_url, auth=(identity, "x")) if identity else gw.proxy_url
    return httpx.Client(proxy=proxy, verify=ssl.create_default_context(cafile=str(gateway_ca[0])), timeout=10)


def _serve(gateway, gateway_ca, trust_secret, tls_origin, port: int, extension: str = "", policy: str = ""):
    origin = tls_origin(HOST, name="api")
    gw = gateway(gateway_yaml(port, extension, policy), gateway_ca[1], trust_secret)
    return gw, origin, f"https://{HOST}:{origin.port}"


def _ext_auth_denied(response: httpx.Response, status: int = 403) -> str:
    assert response.status_code == status, response.text
    assert response.headers["x-egress-denied"] == "ext-auth-denied"
    body = response.json()
    assert body["reason"] == "ext-auth-denied" and body["policy"] == "TrafficPolicy/default/authz-check"
    return str(body["error"])


def test_an_allowed_request_goes_upstream_with_the_services_headers(gateway, gateway_ca, trust_secret, tls_origin, authz):
    gw, origin, base = _serve(gateway, gateway_ca, trust_secret, tls_origin, authz.port)
    with _client(gw, gateway_ca, identity="prod/agent") as client:
        response = client.get(f"{base}/v1/items?q=1", headers={"authorization": "Bearer client-own", "x-remove-me": "1"})
    assert response.status_code == 200, response.text
    [(_, path, headers)] = origin.requests
    seen = {k.lower(): v for k, v in headers.items()}
    assert path == "/v1/items?q=1"
    assert seen["x-authz-user"] == "alice" and "x-remove-me" not in seen
    assert seen["x-upstream-key"] == INJECTED  # the gateway's credential is injected after the check
    [check] = authz.requests
    attributes = check.attributes
    http = attributes.request.http
    assert (http.method, http.path, http.host, http.scheme) == ("GET", "/v1/items?q=1", HOST, "https")
    assert http.headers["authorization"] == "Bearer client-own"  # the client's own credential is sent, as Envoy does
    assert "x-upstream-key" not in http.headers and INJECTED.encode() not in check.SerializeToString()  # the injected one never is
    assert attributes.source.principal == "spiffe://cluster.local/ns/prod/sa/agent"
    assert attributes.source.address.socket_address.address == "127.0.0.1"
    assert attributes.destination.address.socket_address.address == HOST
    assert dict(attributes.context_extensions) == {"team": "payments", "egress.namespace": "prod", "egress.serviceAccount": "agent"}
    logs = gw.logs()
    assert INJECTED not in logs and "client-own" not in logs and INJECTED not in gw.admin("/config_dump").text


def test_a_denial_returns_what_the_service_wrote(gateway, gateway_ca, trust_secret, tls_origin, authz):
    gw, origin, base = _serve(gateway, gateway_ca, trust_secret, tls_origin, authz.port)
    with _client(gw, gateway_ca) as client:
        response = client.get(f"{base}/deny/this")
        bare = client.get(f"{base}/bare-deny")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="authz"'
    assert response.headers["x-egress-denied"] == "ext-auth-denied"
    assert response.text == "no entry for this workload\n"
    assert _ext_auth_denied(bare) == "the ext_authz service of GatewayExtension/default/authz denied the request"
    assert origin.requests == []
    assert 'egress_denials_total{reason="ext-auth-denied"} 2.0' in gw.metrics()


def test_a_service_that_is_down_fails_closed(gateway, gateway_ca, trust_secret, tls_origin):
    gw, origin, base = _serve(gateway, gateway_ca, trust_secret, tls_origin, free_port())
    with _client(gw, gateway_ca) as client:
        error = _ext_auth_denied(client.get(f"{base}/v1/items"))
    assert error.startswith("the ext_authz service of GatewayExtension/default/authz could not decide: ")
    assert error.endswith("(fail closed)")
    assert origin.requests == []


def test_a_service_that_is_down_lets_requests_pass_with_fail_open(gateway, gateway_ca, trust_secret, tls_origin):
    gw, origin, base = _serve(gateway, gateway_ca, trust_secret, tls_origin, free_port(), extension="    failOpen: true")
    with _client(gw, gateway_ca) as client:
        assert client.get(f"{base}/v1/items").status_code == 200
    [(_, _, headers)] = origin.requests
    assert "x-authz-user" not in {k.lower() for k in headers}
    assert "ext auth: GatewayExtension/default/authz for GET api.example.test: " in gw.logs()


def test_a_slow_service_times_out_and_fails_closed(gateway, gateway_ca, trust_secret, tls_origin, authz):
    gw, origin, base = _serve(gateway, gateway_ca, trust_secret, tls_origin, authz.port)
    with _client(gw, gateway_ca) as client:
        error = _ext_auth_denied(client.get(f"{base}/slow"))
        assert client.get(f"{base}/fast").status_code == 200  # the slow call blocked only its own request
    assert "no answer within the timeout (0.5s)" in error
    assert [path for _, path, _ in origin.requests] == ["/fast"]


def test_status_on_error_sets_the_fail_closed_status(gateway, gateway_ca, trust_secret, tls_origin):
    gw, origin, base = _serve(gateway, gateway_ca, trust_secret, tls_origin, free_port(), extension="    statusOnError: 503")
    with _client(gw, gateway_ca) as client:
        _ext_auth_denied(client.get(f"{base}/v1/items"), 503)


def test_disable_at_the_rule_scope_skips_the_service(gateway, gateway_ca, trust_secret, tls_origin, authz):
    gw, origin, base = _serve(gateway, gateway_ca, trust_secret, tls_origin, authz.port)
    with _client(gw, gateway_ca) as client:
        assert client.get(f"{base}/open/deny").status_code == 200  # the service would deny it: never asked
        assert client.get(f"{base}/deny").status_code == 401
    assert [c.attributes.request.http.path for c in authz.requests] == ["/deny"]
    assert [path for _, path, _ in origin.requests] == ["/open/deny"]


def test_report_mode_lets_a_denial_pass_and_counts_it(gateway, gateway_ca, trust_secret, tls_origin, authz):
    gw, origin, base = _serve(gateway, gateway_ca, trust_secret, tls_origin, authz.port, policy="  enforcementMode: Report")
    with _client(gw, gateway_ca) as client:
        assert client.get(f"{base}/deny").status_code == 200
        assert client.get(f"{base}/bare-deny").status_code == 200
        assert client.get(f"{base}/allowed").status_code == 200
    assert len(origin.requests) == 3
    found = re.findall(
        r'^egress_policy_reports_total\{policy="TrafficPolicy/default/authz-check",reason="ext-auth-denied"\} (\S+)$',
        gw.metrics(), re.M,
    )
    assert found == ["2.0"]
    assert "ext-auth-denied" not in "".join(k for k in gw.metrics().splitlines() if k.startswith("egress_denials_total"))
