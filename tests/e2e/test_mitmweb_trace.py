"""mitmweb's flow view carries the gateway's whole decision trace (issue 15, item 5), through the real
`mitmweb -s addons/egress.py`: an allowed request with an injected credential, a request a TrafficPolicy rbac
denies, one no route takes, and a CONNECT no listener takes.

Each flow's comment (what mitmweb's Comment tab shows) is read over mitmweb's `/flows` API; the filters
docs/mitmweb.md documents are run twice, by mitmweb itself (`/flows/dump?filter=`, parsed server-side by
mitmproxy's flowfilter) and by `mitmproxy.flowfilter.parse` over the flows mitmweb saved, and must select the
same flows. The trace names the injected credential's policy, never its value.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import urllib.parse
import warnings

import httpx
import pytest

from egressproxy.decision_trace import TRACE_KEY
from tests.e2e.test_interception import GATEWAY
from tests.e2e.test_mitmweb import _read_flows, _wait_for, mitmweb  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e

SECRET = "sk-trace-test-0123456789abcdef"  # the injected credential: must never reach mitmweb

CONFIG = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}]
  hostnames: [api.example.test]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /v1}}}}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: who-may}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}}]
  rbac:
    action: Allow
    policy:
      matchExpressions: ['request.path.startsWith("/v1/public")']
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {{name: api-key}}
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
stringData: {{token: {json.dumps(SECRET)}}}
"""

# The filters docs/mitmweb.md lists, and which of the four flows each selects.
FILTERS = {
    "~marked": {"rbac", "no_route", "connect"},
    "~marker no_entry": {"rbac", "no_route", "connect"},
    "!~marked": {"ok"},
    '~comment "^outcome: deny"': {"rbac", "no_route", "connect"},
    '~comment "^outcome: allow"': {"ok"},
    '~comment "reason: no-route"': {"no_route", "connect"},
    '~comment "reason: rbac-denied"': {"rbac"},
    '~comment "^policy TrafficPolicy/default/who-may: deny"': {"rbac"},
    '~comment "^credential: CredentialInjectionPolicy/default/api-key"': {"ok"},
    '~comment "^identity: team-a/agent"': {"ok", "rbac", "no_route"},
    '~marked & ~d api.example.test': {"rbac", "no_route"},
}


def test_each_flow_carries_the_decision_trace_and_the_documented_filters_select_it(mitmweb, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin("api.example.test")
    web = mitmweb(GATEWAY, CONFIG, gateway_ca[1], trust_secret)
    web.wait_ready()
    proxy = httpx.Proxy(web.proxy_url, auth=("team-a/agent", "x"))  # attributed, unverified: no basicAuth policy
    with httpx.Client(proxy=proxy, verify=ssl.create_default_context(cafile=str(gateway_ca[0])), timeout=10) as client:
        base = f"https://api.example.test:{origin.port}"
        ok = client.get(f"{base}/v1/public/hello")
        assert ok.status_code == 200 and ok.json()["headers"]["authorization"] == f"Bearer {SECRET}"
        assert client.get(f"{base}/v1/private").headers["x-egress-denied"] == "rbac-denied"
        assert client.get(f"{base}/admin").headers["x-egress-denied"] == "no-route"
    out = subprocess.run(["curl", "-sS", "-i", "--max-time", "10", "--proxy", web.proxy_url, "https://unrouted.example.test/"],
                         capture_output=True, text=True, timeout=20)
    assert "x-egress-denied: no-route" in out.stdout, out.stdout + out.stderr

    flows = _wait_for(web, lambda fs: len([f for f in fs if f.get("comment")]) >= 4)
    ids = _ids(flows)
    comments = {name: next(f["comment"] for f in flows if f["id"] == fid) for name, fid in ids.items()}
    print("\n\n".join(f"{name}:\n{text}" for name, text in comments.items()))

    lines = comments["ok"].splitlines()
    assert lines[0] == "allowed: 200"
    assert lines[1] == "outcome: allow 200 reason: route by HTTPRoute/default/api", lines
    assert "identity: team-a/agent (from proxy Basic user, unverified: no basicAuth policy)" in lines
    assert {"listener: https", "route: default/api", "backend: -"} <= set(lines)
    assert f"candidates: 1. destination (api.example.test:{origin.port})" in lines
    assert any(re.fullmatch(r"route \S+: allow \(route\)", x) for x in lines), lines
    assert any(x.startswith("policy TrafficPolicy/default/who-may: allow") for x in lines), lines
    assert f"destination: api.example.test:{origin.port} dialled 127.0.0.1:{origin.port} (destination check passed)" in lines
    assert "credential: CredentialInjectionPolicy/default/api-key" in lines
    assert any(x.startswith("capture: kept") for x in lines), lines

    rbac = comments["rbac"].splitlines()
    assert rbac[0] == "denied: rbac-denied by TrafficPolicy/default/who-may"
    assert any(x.startswith("policy TrafficPolicy/default/who-may: deny") for x in rbac), rbac
    assert not any(x.startswith("credential:") for x in rbac)
    assert comments["no_route"].startswith("denied: no-route by EgressGateway/default/eg\noutcome: deny 403 reason: no-route")
    assert comments["connect"].startswith("denied: no-route by EgressGateway/default/eg\noutcome: deny 403 reason: no-route")
    assert "destination: unrouted.example.test:443 not dialled" in comments["connect"].splitlines()

    loaded = _read_flows(_dump(web))
    assert {f.id for f in loaded} >= set(ids.values())
    traces = {f.id: f.metadata[TRACE_KEY] for f in loaded if f.id in ids.values()}
    assert traces[ids["ok"]]["credential"] == "CredentialInjectionPolicy/default/api-key"
    assert traces[ids["rbac"]]["checks"][-1]["policy"] == "TrafficPolicy/default/who-may"
    # The trace names the credential's policy, never its value (the request view shows the header as sent).
    assert SECRET not in json.dumps(traces) and not any(SECRET in text for text in comments.values())
    for expression, expected in FILTERS.items():
        want = {ids[name] for name in expected}
        by_mitmweb = {f.id for f in _read_flows(_dump(web, expression))} & set(ids.values())
        assert by_mitmweb == want, f"mitmweb's filter {expression!r}"
        assert _parsed(expression, loaded) & set(ids.values()) == want, f"flowfilter.parse({expression!r})"


def _ids(flows: list[dict]) -> dict[str, str]:
    def one(method: str, path: str | None, host: str = "api.example.test") -> str:
        found = [f["id"] for f in flows if f["request"]["method"] == method and f["request"]["host"] == host
                 and (path is None or f["request"]["path"] == path)]
        assert len(found) == 1, json.dumps(flows, indent=1)
        return found[0]

    return {"ok": one("GET", "/v1/public/hello"), "rbac": one("GET", "/v1/private"), "no_route": one("GET", "/admin"),
            "connect": one("CONNECT", None, "unrouted.example.test")}


def _dump(web, expression: str | None = None) -> bytes:
    query = f"?filter={urllib.parse.quote(expression)}" if expression is not None else ""
    r = web.api("GET", f"/flows/dump{query}")
    assert r.status_code == 200, r.text
    return r.content


def _parsed(expression: str, flows: list) -> set[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from mitmproxy import flowfilter
    match = flowfilter.parse(expression)
    return {f.id for f in flows if match(f)}
