"""Credential injection on the `request` hook: the whole request (body included) is known, nothing is sent yet.

The routing addon recorded the candidate and the route on the flow record; this addon asks the snapshot's
`CredentialTable` which credential applies (egressproxy/credentials.py), refuses it over cleartext, mints a
Google token when the credential needs one (through the one dialer), and applies it with the pure functions of
egressproxy/credential_injection.py. It runs after the body taps, so SigV4 signs the body that is sent.

Refusals are 502s with `x-egress-error`: `credential-requires-tls` (the route did not allow cleartext) and
`credential-unavailable` (no Google token could be had). Neither message holds a secret.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from mitmproxy import http

from egressproxy.credential_injection import OutgoingRequest, cleartext_refused, inject
from egressproxy.decisions import parent_for
from egressproxy.dialer_http import gateway_client
from egressproxy.engine.answers import error_response, flow_record
from egressproxy.engine.guard import fail_closed
from egressproxy.gcp_tokens import ServiceAccountTokens, TokenError, TokenFetch
from egressproxy.hostnames import canonical_host, is_ip_literal
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Snapshot
from egressproxy.upstreams import Upstream

__all__ = ["CredentialInjection"]

_ENC = ("utf-8", "surrogateescape")
_TOKEN_TIMEOUT = 30.0


class CredentialInjection:
    def __init__(self, state: GatewayState, tokens: ServiceAccountTokens | None = None) -> None:
        self.state = state
        self.tokens = tokens if tokens is not None else ServiceAccountTokens()

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        snapshot = self.state.snapshot
        frec = flow_record(flow)
        if flow.response is not None or snapshot is None or frec.upstream is None:
            return
        table = snapshot.compiled.credentials
        credential = table.for_request(frec.upstream, frec.route_ref, frec.rule, frec.listener)
        if credential is None or credential.passthrough:
            return
        req = flow.request
        if cleartext_refused(credential, req.scheme, table.cleartext_allowed(frec.route_ref)):
            detail = f"{credential.source}: a credential is only sent over verified TLS, and {req.host} is {req.scheme}"
            flow.response = error_response(flow, "credential-requires-tls", detail)
            return
        token = None
        if credential.gcp is not None:
            try:
                token = await self.tokens.token(credential.gcp, self._fetcher(snapshot))
            except TokenError as e:
                flow.response = error_response(flow, "credential-unavailable", f"{credential.source}: {e}")
                return
        outgoing = _outgoing(req)
        inject(credential, outgoing, token)
        req.path = outgoing.path
        req.headers = http.Headers([(n.encode(*_ENC), v.encode(*_ENC)) for n, v in outgoing.headers])

    def _fetcher(self, snapshot: Snapshot) -> TokenFetch:
        """A token request over the one dialer (SSRF guard, DNS, verified TLS), only ever over https, with the
        gateway's own parent proxy when it has one."""

        async def fetch(uri: str, form: dict[str, str]) -> tuple[int, object]:
            parts = urlsplit(uri)
            if parts.scheme != "https" or not parts.hostname:
                raise TokenError(f"token endpoint {uri} is not an https URL")
            host = canonical_host(parts.hostname)
            # Under the gateway's parentRef the fetch must go through the parent too; the gateway client refuses
            # such a candidate (no CONNECT yet) rather than dial around the parent.
            sni = None if is_ip_literal(host) else host
            upstream = Upstream(host, parts.port or 443, "https", sni, parent=parent_for(snapshot, None))
            async with gateway_client(self.state.dialer, snapshot, upstream, timeout=_TOKEN_TIMEOUT) as client:
                response = await client.post(uri, data=form)
                try:
                    return response.status_code, response.json()
                except ValueError:
                    return response.status_code, None

        return fetch


def _outgoing(req: http.Request) -> OutgoingRequest:
    headers = [(n.decode(*_ENC), v.decode(*_ENC)) for n, v in req.headers.fields]
    authority = req.headers.get("host") or req.authority or _default_authority(req)
    return OutgoingRequest(req.method, req.scheme, authority, req.path, headers, req.raw_content or b"")


def _default_authority(req: http.Request) -> str:
    default = 443 if req.scheme == "https" else 80
    return req.host if req.port == default else f"{req.host}:{req.port}"
