"""Credential injection on the `request` hook: the whole request (body included) is known, nothing is sent yet.

The routing addon recorded the candidate and the route on the flow record; this addon applies that candidate's
credential with `apply_credential` (egressproxy/candidate_request.py, which the failover hop uses for every
replay): the snapshot's `CredentialTable` says which applies, it is refused over cleartext, a Google token is
minted when needed (through the one dialer). A request sent through the failover hop is left alone
here. It runs after the body taps, so SigV4 signs the body that is sent.

Refusals are 502s with `x-egress-error`: `credential-requires-tls` (the route did not allow cleartext) and
`credential-unavailable` (no Google token could be had). Neither message holds a secret.
"""

from __future__ import annotations

from collections.abc import Iterable

from mitmproxy import http

from egressproxy.candidate_request import CandidateContext, apply_credential, credential_source, token_fetch
from egressproxy.engine.answers import error_response, flow_record
from egressproxy.engine.guard import fail_closed
from egressproxy.gcp_tokens import ServiceAccountTokens, TokenFetch
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Snapshot

__all__ = ["CredentialInjection"]

_ENC = ("utf-8", "surrogateescape")


class CredentialInjection:
    step = "credentials"  # idle without any provider credential or CredentialInjectionPolicy (idle_steps.py)

    @staticmethod
    def idle_on(snapshot: Snapshot) -> bool:
        table = snapshot.compiled.credentials
        return not (table.providers or table.scopes)

    def __init__(self, state: GatewayState, tokens: ServiceAccountTokens | None = None) -> None:
        self.state = state
        self.tokens = tokens if tokens is not None else ServiceAccountTokens()

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        snapshot = self.state.snapshot
        frec = flow_record(flow)
        if flow.response is not None or snapshot is None or frec.upstream is None or frec.hop is not None:
            return  # a request through the failover hop gets each candidate's credential there
        req = flow.request
        outgoing = _InPlace(req)
        context = CandidateContext(frec.route_ref, frec.rule, frec.listener)
        fetch = self._fetcher(snapshot)
        failure = await apply_credential(snapshot, frec.upstream, context, outgoing, self.tokens, fetch)
        if failure is not None:
            flow.response = error_response(flow, failure.reason, failure.detail)
            return
        frec.credential = credential_source(snapshot, frec.upstream, context)  # a name, never the value
        if outgoing.path != req.path:
            req.path = outgoing.path

    def _fetcher(self, snapshot: Snapshot) -> TokenFetch:
        return token_fetch(self.state.dialer, snapshot)


class _InPlace:
    """The proxied request as `inject` edits it (an `EditableRequest`): headers are removed and set in
    mitmproxy's own field list, so a request is not decoded, copied and re-encoded header by header; only
    SigV4 signing reads the whole list. Edits made before a refusal cannot happen: `apply_credential` refuses
    (cleartext, no token) before it injects anything."""

    __slots__ = ("method", "scheme", "authority", "path", "body", "_headers")

    def __init__(self, req: http.Request) -> None:
        self.method = req.method
        self.scheme = req.scheme
        self.authority = req.headers.get("host") or req.authority or _default_authority(req)
        self.path = req.path
        self.body = req.raw_content or b""
        self._headers = req.headers

    @property
    def headers(self) -> Iterable[tuple[str, str]]:
        return [(n.decode(*_ENC), v.decode(*_ENC)) for n, v in self._headers.fields]

    def header(self, name: str) -> str | None:
        values = self._headers.get_all(name)
        return values[0] if values else None

    def remove_headers(self, names: tuple[str, ...]) -> None:
        drop = {n.lower().encode(*_ENC) for n in names}
        fields = self._headers.fields
        if any(n.lower() in drop for n, _ in fields):
            self._headers.fields = tuple(f for f in fields if f[0].lower() not in drop)

    def set_header(self, name: str, value: str) -> None:
        self.remove_headers((name,))
        self._headers.fields += ((name.encode(*_ENC), value.encode(*_ENC)),)


def _default_authority(req: http.Request) -> str:
    default = 443 if req.scheme == "https" else 80
    return req.host if req.port == default else f"{req.host}:{req.port}"
