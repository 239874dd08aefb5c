"""Envoy's ext_authz gRPC protocol (`envoy.service.auth.v3.Authorization/Check`): the CheckRequest the gateway
sends for one request, and the CheckResponse read back as an `ExtAuthAnswer`. The messages are the generated
Envoy API of the `envoy-data-plane` package (betterproto2 classes generated from Envoy's data-plane-api, under
their own `envoy_data_plane` name: xds-protos, the other generated copy, overwrites opentelemetry-proto's and
common-expression-language's files on install, pyproject.toml); nothing of the protocol is written by hand.

What is sent (docs/ext-auth.md), as Envoy's ext_authz filter sends it:
- `attributes.request.http`: method, path (with the query), host, scheme, protocol, the headers with lower-case
  names (repeated ones joined by `,`), the body size when known; the id is the flow's id;
- `attributes.source.address`: the client's address and port; `attributes.source.principal`: the workload
  identity as `spiffe://cluster.local/ns/<namespace>/sa/<serviceAccount>` (Istio's form; empty when unknown);
- `attributes.destination.address`: the destination host and port the request is routed to;
- `attributes.context_extensions`: the TrafficPolicy's `contextExtensions`, plus `egress.namespace` and
  `egress.serviceAccount` (the identity again, for services that do not parse the principal).

The headers are the client's, as they arrived: credentials the gateway injects later are never in them (the
call happens before injection), a credential the client sent itself is, as with Envoy. `Proxy-Authorization`
is the client's credential for the gateway, never sent on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.service.auth import v3 as auth

from egressproxy.ext_auth import ExtAuthAnswer, HeaderEdit
from egressproxy.flowrecord import Identity

__all__ = ["CHECK_METHOD", "CheckInput", "answer_from", "build_check_request", "principal_of"]

CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"
_NOT_SENT = frozenset({"proxy-authorization"})
_APPEND = core.HeaderValueOptionHeaderAppendAction


@dataclass(frozen=True, slots=True)
class CheckInput:
    """What the gateway knows about one request when it calls the service."""

    request_id: str
    method: str
    path: str  # with the query
    host: str
    scheme: str
    protocol: str  # "HTTP/1.1", "HTTP/2"
    headers: tuple[tuple[str, str], ...]  # as the client sent them
    source_address: str
    source_port: int
    destination_host: str
    destination_port: int
    identity: Identity
    body_size: int | None = None


def principal_of(identity: Identity) -> str:
    if identity.namespace == "unknown" and identity.service_account == "unknown":
        return ""
    return f"spiffe://cluster.local/ns/{identity.namespace}/sa/{identity.service_account}"


def _headers(headers: Iterable[tuple[str, str]], only: frozenset[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, value in headers:
        name = raw_name.lower()
        if name in _NOT_SENT or (only is not None and name not in only):
            continue
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


def _peer(address: str, port: int, principal: str = "") -> auth.AttributeContextPeer:
    socket = core.SocketAddress(address=address, port_value=port)
    return auth.AttributeContextPeer(address=core.Address(socket_address=socket), principal=principal)


def build_check_request(
    data: CheckInput, context_extensions: Mapping[str, str], headers_to_forward: frozenset[str] | None = None
) -> auth.CheckRequest:
    http = auth.AttributeContextHttpRequest(
        id=data.request_id,
        method=data.method,
        headers=_headers(data.headers, headers_to_forward),
        path=data.path,
        host=data.host,
        scheme=data.scheme,
        protocol=data.protocol,
        size=data.body_size if data.body_size is not None else -1,
    )
    extensions = {
        **context_extensions,
        "egress.namespace": data.identity.namespace,
        "egress.serviceAccount": data.identity.service_account,
    }
    attributes = auth.AttributeContext(
        source=_peer(data.source_address, data.source_port, principal_of(data.identity)),
        destination=_peer(data.destination_host, data.destination_port),
        request=auth.AttributeContextRequest(http=http),
        context_extensions=extensions,
    )
    return auth.CheckRequest(attributes=attributes)


def answer_from(response: auth.CheckResponse) -> ExtAuthAnswer:
    """OK (`status.code` 0, or no status) is allowed with `ok_response`'s header edits; any other code is a
    denial with `denied_response`'s status, headers and body (an unset status is None: the caller's default)."""
    if response.status is None or response.status.code == 0:
        ok = response.ok_response
        if ok is None:
            return ExtAuthAnswer(True)
        edits = tuple(_edit(option) for option in ok.headers if option.header is not None and option.header.key)
        return ExtAuthAnswer(True, edits, tuple(name.lower() for name in ok.headers_to_remove))
    denied = response.denied_response
    if denied is None:
        return ExtAuthAnswer(False)
    status = int(denied.status.code) if denied.status is not None and int(denied.status.code) else None
    headers = tuple((o.header.key, _value(o.header)) for o in denied.headers if o.header is not None and o.header.key)
    return ExtAuthAnswer(False, status=status, headers=headers, body=denied.body.encode())


def _value(header: core.HeaderValue) -> str:
    return header.value or header.raw_value.decode("utf-8", "replace")


def _edit(option: core.HeaderValueOption) -> HeaderEdit:
    """Envoy's rule for `ok_response.headers`: `append` (when set) appends or overwrites; otherwise
    `append_action` decides, and its default (APPEND_IF_EXISTS_OR_ADD, 0) is read as the documented default of
    this message, overwrite (`append` "defaults to false when used in this message")."""
    assert option.header is not None
    name, value = option.header.key.lower(), _value(option.header)
    if option.append is not None:
        return HeaderEdit(name, value, append=option.append)
    action = option.append_action
    if action == _APPEND.ADD_IF_ABSENT:
        return HeaderEdit(name, value, if_absent=True)
    if action == _APPEND.OVERWRITE_IF_EXISTS:
        return HeaderEdit(name, value, if_present=True)
    return HeaderEdit(name, value)
