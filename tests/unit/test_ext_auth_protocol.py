"""The ext_authz messages (envoy-data-plane's generated Envoy API): what the CheckRequest carries, and how a
CheckResponse reads as an answer, each through the wire encoding."""

from __future__ import annotations

from dataclasses import replace

import pytest
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.service.auth import v3 as auth
from envoy_data_plane.envoy.type import v3 as types
from envoy_data_plane.google import rpc

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
    sent = build_check_request(INPUT, {"team": "payments"})
    attributes = auth.CheckRequest.FromString(sent.SerializeToString()).attributes  # as the service reads it
    assert attributes is not None and attributes.request is not None and attributes.request.http is not None
    assert attributes.source is not None and attributes.source.address is not None
    assert attributes.source.address.socket_address is not None
    assert attributes.destination is not None and attributes.destination.address is not None
    assert attributes.destination.address.socket_address is not None
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
    assert request.attributes is not None and request.attributes.request is not None
    assert request.attributes.request.http is not None
    assert "proxy-authorization" not in request.attributes.request.http.headers
    assert b"c2VjcmV0" not in request.SerializeToString()


def test_headers_to_forward_limits_the_headers_sent() -> None:
    attributes = build_check_request(INPUT, {}, frozenset({"x-tag"})).attributes
    assert attributes is not None and attributes.request is not None and attributes.request.http is not None
    http = attributes.request.http
    assert dict(http.headers) == {"x-tag": "a,b"}


def test_an_unknown_body_size_is_minus_one_and_an_unknown_identity_has_no_principal() -> None:
    data = replace(INPUT, body_size=None, identity=UNKNOWN_IDENTITY)
    attributes = build_check_request(data, {}).attributes
    assert attributes is not None and attributes.request is not None and attributes.request.http is not None
    assert attributes.source is not None
    assert attributes.request.http.size == -1
    assert attributes.source.principal == "" == principal_of(UNKNOWN_IDENTITY)


OK, PERMISSION_DENIED, UNAUTHENTICATED = 0, 7, 16  # google.rpc.Code


def _option(name: str, value: str, **kwargs: object) -> core.HeaderValueOption:
    return core.HeaderValueOption(header=core.HeaderValue(key=name, value=value), **kwargs)  # type: ignore[arg-type]


def _wire(response: auth.CheckResponse) -> auth.CheckResponse:
    """The response as the client reads it: serialized by the server, parsed back."""
    return auth.CheckResponse.FromString(response.SerializeToString())


def test_ok_is_allowed_with_the_header_edits_envoy_applies() -> None:
    action = core.HeaderValueOptionHeaderAppendAction
    ok = auth.OkHttpResponse(
        headers=[
            _option("X-User", "alice"),  # default: overwrite
            _option("x-trace", "1", append=True),
            _option("x-over", "2", append=False),
            _option("x-absent", "3", append_action=action.ADD_IF_ABSENT),
            _option("x-present", "4", append_action=action.OVERWRITE_IF_EXISTS),
        ],
        headers_to_remove=["X-Remove-Me"],
    )
    answer = answer_from(_wire(auth.CheckResponse(status=rpc.Status(code=OK), ok_response=ok)))
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
    denied = auth.DeniedHttpResponse(
        status=types.HttpStatus(code=types.StatusCode.Unauthorized),
        headers=[_option("www-authenticate", "Bearer")],
        body="nope",
    )
    response = auth.CheckResponse(status=rpc.Status(code=PERMISSION_DENIED), denied_response=denied)
    answer = answer_from(_wire(response))
    assert answer == ExtAuthAnswer(False, status=401, headers=(("www-authenticate", "Bearer"),), body=b"nope")
    assert answer.written_by_service


@pytest.mark.parametrize("code", [PERMISSION_DENIED, UNAUTHENTICATED])
def test_a_bare_denial_has_no_response_of_the_services_own(code: int) -> None:
    answer = answer_from(_wire(auth.CheckResponse(status=rpc.Status(code=code))))
    assert answer == ExtAuthAnswer(False)
    assert not answer.written_by_service


def test_the_envoy_api_lives_beside_opentelemetry_proto_and_cel() -> None:
    """The generated Envoy API must not own files of other distributions (xds-protos overwrote
    opentelemetry-proto's and common-expression-language's on install): both still work beside it."""
    import cel
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope

    assert auth.CheckRequest.__module__.startswith("envoy_data_plane.")
    assert InstrumentationScope(name="egressproxy").name == "egressproxy"
    assert cel.compile("1 + 1").execute() == 2
