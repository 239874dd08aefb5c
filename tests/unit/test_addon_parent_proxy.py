"""addons/parent_proxy.py: how a request the routes sent through a parent reaches it (DESIGN.md 4.1).

Plain HTTP goes absolute-form to the parent with the gateway's credentials; TLS goes in a CONNECT carrying them;
a parent's 407 to a plain request is the gateway's 502, never the parent's challenge.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.net.http.http1 import assemble_request_head
from mitmproxy.test import taddons, tflow, tutils

from addons.parent_proxy import ParentProxyAuth
from tests.support.addon_state import compile_snapshot, state_for

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  parentRef: {name: parent}
  listeners:
  - {name: http, protocol: HTTP}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: parent}
spec:
  type: Static
  static: {hosts: [{host: parent.internal, port: 3128}]}
  parent: {authSecretRef: {name: parent-auth}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: anonymous}
spec:
  type: Static
  static: {hosts: [{host: open-parent.internal, port: 8080}]}
  parent: {}
---
apiVersion: v1
kind: Secret
metadata: {name: parent-auth}
stringData: {username: child, password: s3cret}
"""

CREDENTIALS = "Basic " + base64.b64encode(b"child:s3cret").decode()
PARENT = ("parent.internal", 3128)


@pytest.fixture(scope="module")
def snapshot():
    return compile_snapshot(CONFIG)


@pytest.fixture
def addon(snapshot, tmp_path: Path) -> ParentProxyAuth:
    return ParentProxyAuth(state_for(snapshot, tmp_path))


def _request(scheme: str = "http", via: tuple[str, int] | None = PARENT, **headers: str) -> http.HTTPFlow:
    port = 80 if scheme == "http" else 443
    req = tutils.treq(
        host="api.example.com", port=port, scheme=scheme.encode(), path=b"/v1/x?q=1",
        headers=http.Headers(host="api.example.com", **headers), content=b"",
    )
    flow = tflow.tflow(req=req)
    flow.server_conn.address = None
    flow.server_conn.via = ("http", via) if via is not None else None
    return flow


def _hook(addon: ParentProxyAuth, name: str, flow: http.HTTPFlow) -> None:
    with taddons.context(addon):
        getattr(addon, name)(flow)


def test_plain_http_via_a_parent_goes_absolute_form_with_the_gateways_credentials(addon) -> None:
    flow = _request(**{"proxy-authorization": "Basic d29ya2xvYWQ6eA=="})  # the workload's, for us: never passed on
    _hook(addon, "requestheaders", flow)
    req = flow.request
    assert (req.host, req.port) == PARENT  # the connection goes to the parent
    assert flow.server_conn.via is None  # and no CONNECT tunnel is opened to the origin
    assert assemble_request_head(req).split(b"\r\n")[0] == b"GET http://api.example.com/v1/x?q=1 HTTP/1.1"
    assert req.headers["host"] == "api.example.com"
    assert req.headers.get_all("proxy-authorization") == [CREDENTIALS]


def test_a_parent_without_credentials_gets_none(addon) -> None:
    flow = _request(via=("open-parent.internal", 8080))
    _hook(addon, "requestheaders", flow)
    assert (flow.request.host, flow.request.port) == ("open-parent.internal", 8080)
    assert "proxy-authorization" not in flow.request.headers


@pytest.mark.parametrize("case", ["https", "no-parent", "answered"])
def test_other_requests_are_left_as_they_are(addon, case: str) -> None:
    flow = _request(scheme="https" if case == "https" else "http", via=None if case == "no-parent" else PARENT)
    if case == "answered":
        flow.response = tutils.tresp(status_code=403)
    before = (flow.request.host, flow.request.port, flow.server_conn.via, flow.request.authority)
    _hook(addon, "requestheaders", flow)
    assert (flow.request.host, flow.request.port, flow.server_conn.via, flow.request.authority) == before


def test_a_connect_to_the_parent_carries_the_gateways_credentials(addon) -> None:
    flow = tflow.tflow(req=tutils.treq(method=b"CONNECT", host="api.example.com", port=443, path=b"", content=b""))
    flow.server_conn.address = PARENT
    _hook(addon, "http_connect_upstream", flow)
    assert flow.request.headers["proxy-authorization"] == CREDENTIALS


def test_a_connect_elsewhere_gets_no_credentials(addon) -> None:
    flow = tflow.tflow(req=tutils.treq(method=b"CONNECT", host="api.example.com", port=443, path=b"", content=b""))
    flow.server_conn.address = ("somewhere.else", 3128)
    _hook(addon, "http_connect_upstream", flow)
    assert "proxy-authorization" not in flow.request.headers


def test_a_parents_407_to_a_plain_request_is_the_gateways_502(addon) -> None:
    flow = _request()
    _hook(addon, "requestheaders", flow)
    flow.response = tutils.tresp(status_code=407, headers=http.Headers(**{"proxy-authenticate": 'Basic realm="p"'}))
    flow.response.stream = True
    _hook(addon, "responseheaders", flow)
    assert flow.response.stream is False  # read whole, so it can be replaced
    _hook(addon, "response", flow)
    assert flow.response.status_code == 502
    assert flow.response.headers["x-egress-error"] == "upstream-unreachable"
    assert "proxy-authenticate" not in flow.response.headers


@pytest.mark.parametrize("status", [200, 403])
def test_other_answers_of_the_parent_reach_the_client(addon, status: int) -> None:
    flow = _request()
    _hook(addon, "requestheaders", flow)
    flow.response = tutils.tresp(status_code=status)
    _hook(addon, "responseheaders", flow)
    _hook(addon, "response", flow)
    assert flow.response.status_code == status


def test_parents_are_indexed_by_their_address(snapshot) -> None:
    """The compiled parent credentials are found by the parent's address; a parent without authSecretRef has none."""
    compiled = snapshot.compiled
    assert compiled.parent_authorization(*PARENT) is not None
    assert compiled.parent_authorization(*PARENT).startswith("Basic ")
    assert compiled.parent_authorization("open-parent.internal", 8080) is None
    assert set(compiled.parents) == {PARENT, ("open-parent.internal", 8080)}