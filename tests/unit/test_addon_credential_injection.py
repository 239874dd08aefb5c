"""addons/credential_injection.py and addons/model_rewrite.py on mitmproxy flows (taddons, tflow), no sockets.

The flow record carries what the routing addon decided (the candidate and the route); the addons apply the
snapshot's credential, refuse it over cleartext with a 502 naming the reason, and rewrite the model.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow, tutils

from addons.credential_injection import CredentialInjection
from addons.model_rewrite import ModelRewrite
from egressproxy.config.problems import ObjectRef
from egressproxy.engine.answers import flow_record
from egressproxy.gcp_tokens import TokenError
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Snapshot
from egressproxy.upstreams import Upstream
from tests.support.addon_state import compile_snapshot, state_for

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  listeners:
  - {name: http, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: eg}]
  hostnames: [api.example.com]
  rules: [{}]
---
apiVersion: v1
kind: Secret
metadata: {name: tok}
stringData: {token: t-1}
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {name: key}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  secretRef: {name: tok}
  target: Header
  headerName: x-api-key
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: ai}
spec:
  type: AI
  ai:
    priorityGroups:
    - providers:
      - {name: pass, openai: {model: configured, authToken: {kind: Passthrough}}}
      - {name: vertex, vertexAi: {projectId: p, location: europe-west4, authToken: {kind: SecretRef, secretRef: {name: sa}}}}
---
apiVersion: v1
kind: Secret
metadata: {name: sa}
stringData:
  key.json: '{"type": "service_account", "client_email": "sa@p", "private_key": "%s"}'
"""
ROUTE = ObjectRef("HTTPRoute", "default", "r")


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return compile_snapshot(CONFIG % pem.decode().replace("\n", "\\n"))


@pytest.fixture
def state(snapshot: Snapshot, tmp_path: Path) -> GatewayState:
    return state_for(snapshot, tmp_path)


def flow(scheme: str, upstream: Upstream | None, body: bytes = b"{}", **headers: str) -> http.HTTPFlow:
    req = tutils.treq(host="api.example.com", port=443 if scheme == "https" else 80, scheme=scheme.encode(),
                      authority=b"", path=b"/v1/x?key=dummy", content=body)
    req.headers.clear()
    req.headers["host"] = "api.example.com"
    for name, value in headers.items():
        req.headers[name.replace("_", "-")] = value
    f = tflow.tflow(req=req)
    record = flow_record(f)
    record.route_ref, record.upstream, record.listener = ROUTE, upstream, "http"
    return f


def run(addon: CredentialInjection, f: http.HTTPFlow) -> None:
    with taddons.context(addon):
        asyncio.run(addon.request(f))


def test_the_policy_header_replaces_the_workloads_over_https(state: GatewayState) -> None:
    f = flow("https", Upstream("api.example.com", 443), x_api_key="dummy", authorization="Bearer dummy")
    run(CredentialInjection(state), f)
    assert f.response is None
    assert list(f.request.headers.items()) == [("host", "api.example.com"), ("x-api-key", "t-1")]
    assert f.request.path == "/v1/x"


def test_cleartext_gets_a_502_and_nothing_is_sent(state: GatewayState) -> None:
    f = flow("http", Upstream("api.example.com", 80, "http"), x_api_key="dummy")
    run(CredentialInjection(state), f)
    assert f.response is not None and f.response.status_code == 502
    assert f.response.headers["x-egress-error"] == "credential-requires-tls"
    assert "t-1" not in f.response.text and flow_record(f).error == "credential-requires-tls"


def test_a_request_without_a_decided_candidate_is_left_alone(state: GatewayState) -> None:
    f = flow("http", None, x_api_key="dummy")
    run(CredentialInjection(state), f)
    assert f.response is None and f.request.headers["x-api-key"] == "dummy"


def _provider(state: GatewayState, name: str) -> Upstream:
    assert state.snapshot is not None
    backend = state.snapshot.backends[ObjectRef("Backend", "default", "ai")]
    [provider] = [p for p in backend.ai_groups[0] if p.name == name]
    return Upstream("api.example.com", 443, backend=backend, provider=provider)


def test_passthrough_keeps_the_workloads_key(state: GatewayState) -> None:
    f = flow("https", _provider(state, "pass"), authorization="Bearer mine")
    run(CredentialInjection(state), f)
    assert f.response is None and f.request.headers["authorization"] == "Bearer mine"


def test_a_token_that_cannot_be_minted_is_a_502_credential_unavailable(state: GatewayState, monkeypatch: pytest.MonkeyPatch) -> None:
    addon = CredentialInjection(state)

    async def refuse(uri: str, form: dict[str, str]) -> tuple[int, object]:
        raise TokenError("token endpoint unreachable")

    monkeypatch.setattr(addon, "_fetcher", lambda snapshot: refuse)
    f = flow("https", _provider(state, "vertex"))
    run(addon, f)
    assert f.response is not None and f.response.status_code == 502
    assert f.response.headers["x-egress-error"] == "credential-unavailable"


def test_a_minted_token_goes_as_bearer(state: GatewayState, monkeypatch: pytest.MonkeyPatch) -> None:
    addon = CredentialInjection(state)

    async def grant(uri: str, form: dict[str, str]) -> tuple[int, object]:
        return 200, {"access_token": "ya29.minted", "expires_in": 3600}

    monkeypatch.setattr(addon, "_fetcher", lambda snapshot: grant)
    f = flow("https", _provider(state, "vertex"), authorization="Bearer dummy")
    run(addon, f)
    assert f.request.headers.get_all("authorization") == ["Bearer ya29.minted"]


def test_the_configured_model_replaces_the_clients(state: GatewayState) -> None:
    f = flow("https", _provider(state, "pass"), body=b'{"model": "asked", "stream": true}', content_type="application/json")
    with taddons.context(ModelRewrite(state)) as ctx:
        ctx.master.addons.get("modelrewrite").request(f)
    assert json.loads(f.request.content or b"") == {"model": "configured", "stream": True}
    assert f.request.headers["content-length"] == str(len(f.request.content or b""))


def test_injection_edits_the_requests_own_header_list_in_place(state: GatewayState) -> None:
    """No per-request copy of every header: the same Headers object, other fields untouched (byte for byte, a
    non-UTF-8 value and a repeated header included), every copy of a removed name gone."""
    f = flow("https", Upstream("api.example.com", 443), authorization="Bearer dummy")
    f.request.headers.fields += ((b"X-Bin", b"\xff\xfe"), (b"Accept", b"a"), (b"Accept", b"b"), (b"X-API-Key", b"w"))
    headers = f.request.headers
    run(CredentialInjection(state), f)
    assert f.request.headers is headers
    assert f.request.headers.fields == (
        (b"host", b"api.example.com"), (b"X-Bin", b"\xff\xfe"), (b"Accept", b"a"), (b"Accept", b"b"), (b"x-api-key", b"t-1"),
    )


def test_the_in_place_view_edits_like_an_outgoing_request_copy() -> None:
    """The view `inject` edits (addons/credential_injection._InPlace) and the failover hop's copy
    (`OutgoingRequest`) give the same header list for the same edits."""
    from addons.credential_injection import _InPlace
    from egressproxy.credential_injection import OutgoingRequest

    fields = [("Host", "a"), ("Authorization", "x"), ("X-A", "1"), ("authorization", "y"), ("X-B", "2")]
    req = tutils.treq()
    req.headers.fields = tuple((n.encode(), v.encode()) for n, v in fields)
    view = _InPlace(req)
    copy = OutgoingRequest("GET", "https", "a", "/", list(fields))
    for target in (view, copy):
        assert target.header("AUTHORIZATION") == "x"
        target.remove_headers(("authorization", "x-missing"))
        target.set_header("X-A", "3")
        target.set_header("X-New", "4")
        assert target.header("x-gone") is None
    assert list(view.headers) == copy.headers == [("Host", "a"), ("X-B", "2"), ("X-A", "3"), ("X-New", "4")]
