"""Preparing a request for one upstream candidate: its path, its model and its credential.

Used by the first hop (addons/credential_injection.py and addons/model_rewrite.py call the same functions on
the flow) and by every replay of the failover walk (egressproxy/upstream_hop.py), so a request looks the same
to a provider whether it is the first candidate or the third:

1. `pathOverride.fullPath` of the provider replaces the path (the client's query is kept);
2. the provider's configured `model` replaces the body's (JSON bodies without a Content-Encoding);
3. the credential that applies to the candidate (egressproxy/credentials.py) - the workload's own removed first -
   refused over cleartext unless the route allows it, a Google token minted through the one dialer when needed.

A candidate of another API format than the client's (an Anthropic provider for an OpenAI request) is sent its
`Translation` (egressproxy/cross_format.py) instead of steps 1 and 2: the translated body with the candidate's
model, at the candidate's path; step 3 is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from egressproxy.credential_injection import EditableRequest, OutgoingRequest, cleartext_refused, inject
from egressproxy.credentials import Credential
from egressproxy.cross_format import Translation
from egressproxy.decisions import parent_for
from egressproxy.dialer import Dialer
from egressproxy.dialer_http import gateway_client
from egressproxy.gcp_tokens import ServiceAccountTokens, TokenError, TokenFetch
from egressproxy.hostnames import canonical_host, is_ip_literal
from egressproxy.model_rewrite import configured_model, rewrite_model
from egressproxy.outcomes import GatewayFailure
from egressproxy.snapshot import ObjectRef, Snapshot
from egressproxy.upstreams import Upstream

__all__ = [
    "CandidateContext",
    "apply_credential",
    "candidate_path",
    "prepare_candidate",
    "token_fetch",
]

_TOKEN_TIMEOUT = 30.0

@dataclass(frozen=True, slots=True)
class CandidateContext:
    """What credential lookup needs about the request's decision."""

    route: ObjectRef | None
    rule: int | None
    listener: str | None


def candidate_path(path: str, upstream: Upstream) -> str:
    """`pathOverride.fullPath` replaces the path; the query the client sent is kept."""
    override = upstream.provider.path if upstream.provider is not None else None
    if not override:
        return path
    _, sep, query = path.partition("?")
    return f"{override}{sep}{query}"


def _model_body(request: OutgoingRequest, upstream: Upstream) -> bytes:
    model = configured_model(upstream.provider)
    if model is None or request.header("content-encoding"):
        return request.body
    rewritten = rewrite_model(request.body, model)
    return rewritten if rewritten is not None else request.body


# Headers of one API that mean nothing (or something else) to the other; the translated answer is read by the
# gateway, so it comes unencoded.
_FOREIGN_HEADERS = {
    "anthropic-messages": ("openai-organization", "openai-project", "openai-beta"),
    "openai-chat": ("anthropic-version", "anthropic-beta"),
}


def _translate(request: OutgoingRequest, translation: Translation) -> None:
    request.path = translation.path
    request.body = translation.body
    request.remove_headers(_FOREIGN_HEADERS[translation.provider.value])
    request.set_header("accept-encoding", "identity")
    if translation.stream:
        request.set_header("accept", "text/event-stream")


def credential_source(snapshot: Snapshot, upstream: Upstream, context: CandidateContext) -> str | None:
    """The name of what `apply_credential` injects for this candidate (`Kind/ns/name`, for the flow's decision
    trace), or None when nothing is injected. A name only: the credential's value never leaves its form."""
    credential = snapshot.compiled.credentials.for_request(upstream, context.route, context.rule, context.listener)
    return credential.source if credential is not None and not credential.passthrough else None


async def apply_credential(
    snapshot: Snapshot,
    upstream: Upstream,
    context: CandidateContext,
    request: EditableRequest,
    tokens: ServiceAccountTokens,
    fetch: TokenFetch,
) -> GatewayFailure | None:
    """Inject the candidate's credential into `request` in place; the failure that refuses it, else None."""
    table = snapshot.compiled.credentials
    credential: Credential | None = table.for_request(upstream, context.route, context.rule, context.listener)
    if credential is None or credential.passthrough:
        return None
    if cleartext_refused(credential, request.scheme, table.cleartext_allowed(context.route)):
        detail = f"{credential.source}: a credential is only sent over verified TLS, and {upstream.host} is {request.scheme}"
        return GatewayFailure("credential-requires-tls", detail)
    token = None
    if credential.gcp is not None:
        try:
            token = await tokens.token(credential.gcp, fetch)
        except TokenError as e:
            return GatewayFailure("credential-unavailable", f"{credential.source}: {e}")
    inject(credential, request, token)
    return None


async def prepare_candidate(
    snapshot: Snapshot,
    upstream: Upstream,
    context: CandidateContext,
    original: OutgoingRequest,
    tokens: ServiceAccountTokens,
    fetch: TokenFetch,
    authority: str | None = None,
    translation: Translation | None = None,
) -> OutgoingRequest | GatewayFailure:
    """The request as `upstream` receives it, built from `original` (never modified: it is the replay buffer).

    `authority` is the Host the candidate is sent (default: the original's); a signature (SigV4) covers it.
    `translation`: the candidate speaks the other chat API, and gets this body and path instead."""
    request = replace(original, headers=list(original.headers), scheme=upstream.scheme, authority=authority or original.authority)
    if translation is not None:
        _translate(request, translation)
    else:
        request.path = candidate_path(original.path, upstream)
        request.body = _model_body(request, upstream)
    if request.body is not original.body:
        request.set_header("content-length", str(len(request.body)))
    failure = await apply_credential(snapshot, upstream, context, request, tokens, fetch)
    return failure if failure is not None else request


def token_fetch(dialer: Dialer, snapshot: Snapshot) -> TokenFetch:
    """A Google token request over the one dialer (SSRF guard, DNS, verified TLS), only ever over https, with
    the gateway's own parent proxy when it has one (the gateway client then refuses: no CONNECT yet)."""

    async def fetch(uri: str, form: dict[str, str]) -> tuple[int, object]:
        parts = urlsplit(uri)
        if parts.scheme != "https" or not parts.hostname:
            raise TokenError(f"token endpoint {uri} is not an https URL")
        host = canonical_host(parts.hostname)
        sni = None if is_ip_literal(host) else host
        upstream = Upstream(host, parts.port or 443, "https", sni, parent=parent_for(snapshot, None))
        async with gateway_client(dialer, snapshot, upstream, timeout=_TOKEN_TIMEOUT) as client:
            response = await client.post(uri, data=form)
            try:
                return response.status_code, response.json()
            except ValueError:
                return response.status_code, None

    return fetch

