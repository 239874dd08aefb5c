"""Applying a compiled `Credential` to an outgoing request: pure functions, no mitmproxy, no network.

The order is fixed (docs/credentials.md): the workload's own credentials are removed first (unless the
credential is Passthrough), then Azure's deployment path and `api-version`, then headers and query parameters,
then a minted Google access token, and AWS SigV4 signing last, over the request exactly as it will be sent
(path, query, headers and body). Signing is botocore's (`botocore.auth.SigV4Auth`), never our own.

`cleartext_refused` is the transport rule: a credential goes only over TLS the gateway verified (the dialer
never opens an unverified upstream TLS connection, so `https` means verified), unless the route allows
cleartext with the `egressproxy.io/allow-cleartext-credentials: "true"` annotation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl, quote, urlencode


from egressproxy.credentials import AwsSigV4, AzureDeployment, AZURE_DEFAULT_API_VERSION, Credential

__all__ = ["EditableRequest", "OutgoingRequest", "inject", "query_of", "with_query", "cleartext_refused", "aws_scope_from_host"]

_DEFAULT_AWS_REGION = "us-east-1"
# Not signed: hop-by-hop headers a proxy may drop or rewrite on the way (a signed header that changes breaks the
# signature), and the Host, which botocore takes from the URL's authority.
_UNSIGNED = frozenset({"host", "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"})


class EditableRequest(Protocol):
    """What `inject` reads and edits: an `OutgoingRequest` (a copy, for failover candidates) or a view that edits
    the proxied request's own header list in place (addons/credential_injection.py), so the common injection
    does not copy every header of every request. `headers` is only read to sign (SigV4)."""

    method: str
    scheme: str
    authority: str
    path: str
    body: bytes

    @property
    def headers(self) -> Iterable[tuple[str, str]]: ...

    def header(self, name: str) -> str | None: ...

    def remove_headers(self, names: tuple[str, ...]) -> None: ...

    def set_header(self, name: str, value: str) -> None:
        """Remove every `name` header and append one with `value` (at the end, as `OutgoingRequest` does)."""


def query_of(path: str) -> list[tuple[str, str]]:
    """The query pairs of a request path (blank values kept)."""
    return parse_qsl(path.partition("?")[2], keep_blank_values=True)


def with_query(path: str, pairs: list[tuple[str, str]]) -> str:
    """`path` with its query replaced by `pairs` (no `?` when there are none)."""
    base = path.partition("?")[0]
    return f"{base}?{urlencode(pairs, quote_via=quote)}" if pairs else base


@dataclass(slots=True)
class OutgoingRequest:
    """The parts of a request a credential touches, as they will go upstream."""

    method: str
    scheme: str  # https | http
    authority: str  # host[:port] as the upstream sees it (Host / :authority)
    path: str  # path and query, as on the request line
    headers: list[tuple[str, str]] = field(default_factory=list, repr=False)
    body: bytes = field(default=b"", repr=False)

    def header(self, name: str) -> str | None:
        lower = name.lower()
        return next((v for n, v in self.headers if n.lower() == lower), None)

    def remove_headers(self, names: tuple[str, ...]) -> None:
        drop = {n.lower() for n in names}
        self.headers = [(n, v) for n, v in self.headers if n.lower() not in drop]

    def set_header(self, name: str, value: str) -> None:
        self.remove_headers((name,))
        self.headers.append((name, value))

    def query(self) -> list[tuple[str, str]]:
        return query_of(self.path)

    def set_query(self, pairs: list[tuple[str, str]]) -> None:
        self.path = with_query(self.path, pairs)


def cleartext_refused(credential: Credential, scheme: str, route_allows_cleartext: bool) -> bool:
    """True when injecting would put a credential on the wire unencrypted and the route did not allow it.
    Passthrough injects nothing, so nothing is refused for it."""
    return not credential.passthrough and scheme != "https" and not route_allows_cleartext


def inject(credential: Credential, request: EditableRequest, gcp_token: str | None = None) -> None:
    """Apply `credential` to `request` in place. `gcp_token` is the access token minted for `credential.gcp`."""
    if credential.passthrough:
        return
    request.remove_headers(credential.removes)
    _remove_query(request, credential.removes_query)
    if credential.azure is not None:
        _azure_deployment(request, credential.azure)
    for header in credential.headers:
        if header.only_if_absent and request.header(header.name) is not None:
            continue
        request.set_header(header.name, header.value)
    if credential.query:
        request.path = with_query(request.path, query_of(request.path) + [(q.name, q.value) for q in credential.query])
    if credential.gcp is not None:
        if gcp_token is None:
            raise ValueError("a Google access token is required for this credential")
        request.set_header("authorization", f"Bearer {gcp_token}")
    if credential.sigv4 is not None:
        _sign_sigv4(request, credential.sigv4)


def _remove_query(request: EditableRequest, names: tuple[str, ...]) -> None:
    if "?" not in request.path:
        return
    pairs = query_of(request.path)
    kept = [(n, v) for n, v in pairs if n not in names]
    if len(kept) != len(pairs):
        request.path = with_query(request.path, kept)


def _azure_deployment(request: EditableRequest, azure: AzureDeployment) -> None:
    """`/v1/chat/completions` (OpenAI's path) -> `/openai/deployments/<name>/chat/completions`; a path already
    in Azure's form gets the configured deployment. `api-version`: configured, else the client's, else default."""
    path, _, _ = request.path.partition("?")
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["openai", "deployments"] and len(parts) >= 3:
        rest = parts[3:]
    else:
        rest = parts[2:] if parts[:2] == ["openai", "v1"] else parts[1:] if parts[:1] == ["v1"] else parts
    new_path = "/" + "/".join(["openai", "deployments", quote(azure.deployment, safe=""), *rest])
    pairs = query_of(request.path)
    client_version = next((v for n, v in pairs if n == "api-version"), None)
    version = azure.api_version or client_version or AZURE_DEFAULT_API_VERSION
    pairs = [(n, v) for n, v in pairs if n != "api-version"] + [("api-version", version)]
    request.path = with_query(new_path, pairs)


def aws_scope_from_host(host: str) -> tuple[str, str]:
    """(region, service) from an AWS endpoint name: `bedrock-runtime.eu-west-1.amazonaws.com` signs as
    (`eu-west-1`, `bedrock`); other names give us-east-1 and their first label."""
    labels = host.split(":", 1)[0].lower().split(".")
    service = labels[0].removesuffix("-runtime") or "execute-api"
    if len(labels) >= 4 and labels[-2:] == ["amazonaws", "com"]:
        return labels[1], service
    return _DEFAULT_AWS_REGION, service


def _sign_sigv4(request: EditableRequest, sigv4: AwsSigV4) -> None:
    """Sign with botocore over the method, URL, end-to-end headers (Host from the authority) and body as sent."""
    region, service = aws_scope_from_host(request.authority)
    headers: dict[str, str] = {}
    for name, value in request.headers:
        key = name.lower()
        if key in _UNSIGNED:
            continue
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    # botocore costs ~0.1 s to import: only a gateway that signs for AWS pays it, on its first signature.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    aws = AWSRequest(method=request.method, url=f"{request.scheme}://{request.authority}{request.path}", data=request.body, headers=headers)
    creds = Credentials(sigv4.access_key_id, sigv4.secret_access_key, sigv4.session_token)
    SigV4Auth(creds, sigv4.service or service, sigv4.region or region).add_auth(aws)
    for name in ("x-amz-date", "x-amz-security-token", "authorization"):
        value = aws.headers.get(name)
        if value is not None:
            request.set_header(name, value)
