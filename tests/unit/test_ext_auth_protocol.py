"""The ext_authz messages: what the CheckRequest carries, and how a CheckResponse reads as an answer."""

from __future__ import annotations

from dataclasses import replace

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import wrappers_pb2
from google.rpc import code_pb2, status_pb2

from egressproxy.ext_auth import ExtAuthAnswer, HeaderEdit
from egressproxy.ext_auth_protocol import CheckInput, answer_from, build_check_request, principal_of
from egressproxy.flowrecord import UNKNOWN_IDENTITY, Identity

INPUT = CheckInput(
    request_id="flow-1",
    method="POST",
    path="/v1/chat?x=1",
    host="api.example.test",
    scheme="https",
    protocol="HTTP/1.1",
    headers=(("Authorization", "Bearer own"), ("X-Tag", "a"), ("x-tag", "b"), ("Proxy-Authorization", "Basic c2VjcmV0")),
    source_address="10.0.0.7",
    source_port=40000,
    destination_host="api.example.test",
    destination_port=443,
    identity=Identity("prod", "agent"),
    body_size=12,
)


def test_the_check_request_carries_method_path_host_headers_source_and_identity() -> None:
    attributes = build_check_request(INPUT, {"team": "payments"}).attributes
    http = attributes.request.http
    assert (http.id, http.method, http.path, http.host, http.scheme, http.protocol, http.size) == (
        "flow-1", "POST", "/v1/chat?x=1", "api.example.test", "https", "HTTP/1.1", 12)
    assert dict(http.headers) == {"authorization": "Bearer own", "x-tag": "a,b"}  # lower-case, repeated joined
    assert attributes.source.principal == "spiffe://cluster.local/ns/prod/sa/agent"
    assert (attributes.source.address.socket_address.address, attributes.source.address.socket_address.port_value) == ("10.0.0.7", 40000)
    assert attributes.destination.address.socket_address.port_value == 443
    assert dict(attributes.context_extensions) == {"team": "payments", "egress.namespace": "prod", "egress.serviceAccount": "agent"}


def test_the_gateways_own_credential_is_never_sent() -> None:
    request = build_check_request(INPUT, {})
    assert "proxy-authorization" not in request.attributes.request.http.headers
    assert "c2VjcmV0" not in str(request)


def test_headers_to_forward_limits_the_headers_sent() -> None:
    http = build_check_request(INPUT, {}, frozenset({"x-tag"})).attributes.request.http
    assert dict(http.headers) == {"x-tag": "a,b"}


def test_an_unknown_body_size_is_minus_one_and_an_unknown_identity_has_no_principal() -> None:
    data = replace(INPUT, body_size=None, identity=UNKNOWN_IDENTITY)
    request = build_check_request(data, {})
    assert request.attributes.request.http.size == -1
    assert request.attributes.source.principal == "" == principal_of(UNKNOWN_IDENTITY)


def _option(name: str, value: str, **kwargs: object) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value), **kwargs)  # type: ignore[arg-type]


def test_ok_is_allowed_with_the_header_edits_envoy_applies() -> None:
    action = base_pb2.HeaderValueOption.HeaderAppendAction
    ok = external_auth_pb2.OkHttpResponse(
        headers=[
            _option("X-User", "alice"),  # default: overwrite
            _option("x-trace", "1", append=wrappers_pb2.BoolValue(value=True)),
            _option("x-over", "2", append=wrappers_pb2.BoolValue(value=False)),
            _option("x-absent", "3", append_action=action.ADD_IF_ABSENT),
            _option("x-present", "4", append_action=action.OVERWRITE_IF_EXISTS),
        ],
        headers_to_remove=["X-Remove-Me"],
    )
    answer = answer_from(external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK), ok_response=ok))
    assert answer == ExtAuthAnswer(
        True,
        (
            HeaderEdit("x-user", "alice"),
            HeaderEdit("x-trace", "1", append=True),
            HeaderEdit("x-over", "2"),
            HeaderEdit("x-absent", "3", if_absent=True),
            HeaderEdit("x-present", "4", if_present=True),
        ),
        ("x-remove-me",),
    )


def test_a_denial_carries_the_services_status_headers_and_body() -> None:
    denied = external_auth_pb2.DeniedHttpResponse(
        status=http_status_pb2.HttpStatus(code=http_status_pb2.Unauthorized),
        headers=[_option("www-authenticate", "Bearer")],
        body="nope",
    )
    response = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED), denied_response=denied)
    answer = answer_from(response)
    assert answer == ExtAuthAnswer(False, status=401, headers=(("www-authenticate", "Bearer"),), body=b"nope")
    assert answer.written_by_service


@pytest.mark.parametrize("code", [code_pb2.PERMISSION_DENIED, code_pb2.UNAUTHENTICATED])
def test_a_bare_denial_has_no_response_of_the_services_own(code: int) -> None:
    answer = answer_from(external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code)))
    assert answer == ExtAuthAnswer(False)
    assert not answer.written_by_service
