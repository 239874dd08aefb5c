"""Envoy's ext_authz gRPC protocol (`envoy.service.auth.v3.Authorization/Check`): the CheckRequest the gateway
sends for one request, and the CheckResponse read back as an `ExtAuthAnswer`. The messages are the generated
Envoy API of the `xds-protos` package; nothing of the protocol is written by hand here.

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

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2

from egressproxy.ext_auth import ExtAuthAnswer, HeaderEdit
from egressproxy.flowrecord import Identity

__all__ = ["CheckInput", "answer_from", "build_check_request", "principal_of"]

_NOT_SENT = frozenset({"proxy-authorization"})
_APPEND = base_pb2.HeaderValueOption.HeaderAppendAction


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


def build_check_request(
    data: CheckInput, context_extensions: Mapping[str, str], headers_to_forward: frozenset[str] | None = None
) -> external_auth_pb2.CheckRequest:
    context = attribute_context_pb2.AttributeContext
    http = context.HttpRequest(
        id=data.request_id,
        method=data.method,
        headers=_headers(data.headers, headers_to_forward),
        path=data.path,
        host=data.host,
        scheme=data.scheme,
        protocol=data.protocol,
        size=data.body_size if data.body_size is not None else -1,
    )
    source = context.Peer(principal=principal_of(data.identity))
    source.address.socket_address.address = data.source_address
    source.address.socket_address.port_value = data.source_port
    destination = context.Peer()
    destination.address.socket_address.address = data.destination_host
    destination.address.socket_address.port_value = data.destination_port
    extensions = {
        **context_extensions,
        "egress.namespace": data.identity.namespace,
        "egress.serviceAccount": data.identity.service_account,
    }
    attributes = context(
        source=source, destination=destination, request=context.Request(http=http), context_extensions=extensions
    )
    return external_auth_pb2.CheckRequest(attributes=attributes)


def answer_from(response: external_auth_pb2.CheckResponse) -> ExtAuthAnswer:
    """OK (`status.code` 0) is allowed with `ok_response`'s header edits; any other code is a denial with
    `denied_response`'s status, headers and body (an unset status is None: the caller's default applies)."""
    if response.status.code == 0:
        ok = response.ok_response
        edits = tuple(_edit(option) for option in ok.headers if option.header.key)
        return ExtAuthAnswer(True, edits, tuple(name.lower() for name in ok.headers_to_remove))
    denied = response.denied_response
    status = int(denied.status.code) or None
    headers = tuple((o.header.key, _value(o.header)) for o in denied.headers if o.header.key)
    return ExtAuthAnswer(False, status=status, headers=headers, body=denied.body.encode())


def _value(header: base_pb2.HeaderValue) -> str:
    return header.value or header.raw_value.decode("utf-8", "replace")


def _edit(option: base_pb2.HeaderValueOption) -> HeaderEdit:
    """Envoy's rule for `ok_response.headers`: `append` (when set) appends or overwrites; otherwise
    `append_action` decides, and its default (APPEND_IF_EXISTS_OR_ADD, 0) is read as the documented default of
    this message, overwrite (`append` "defaults to false when used in this message")."""
    name, value = option.header.key.lower(), _value(option.header)
    if option.HasField("append"):
        return HeaderEdit(name, value, append=option.append.value)
    action = option.append_action
    if action == _APPEND.ADD_IF_ABSENT:
        return HeaderEdit(name, value, if_absent=True)
    if action == _APPEND.OVERWRITE_IF_EXISTS:
        return HeaderEdit(name, value, if_present=True)
    return HeaderEdit(name, value)
