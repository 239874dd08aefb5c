"""External auth (DESIGN.md 4.2, docs/ext-auth.md): the compiled forms, which one applies to a request, and what
an answer of the service means for it.

A GatewayExtension `type: ExtAuth` names the ext_authz service (`ExtAuthService`); a TrafficPolicy `extAuth`
attaches it (`ExtAuthPolicy`) or, with `disable` / `enablement: DisableAll`, turns an inherited one off. The most
specific TrafficPolicy that has an `extAuth` decides (Rule > Route > Backend > Listener > Gateway), like `rbac`.

What a call ended with is an `ExtAuthAnswer` (egressproxy/ext_auth_protocol.py builds it from the gRPC
response); `verdict_for` turns it into the request's fate: allowed (with header edits), denied with the
service's own response, or denied/allowed because the service could not answer (`failOpen`). Pure functions
over frozen values, shared by the addon (addons/ext_auth.py) and `explain`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from egressproxy.config.problems import ObjectRef
from egressproxy.flowrecord import Verdict
from egressproxy.request_policies import PolicyReport

if TYPE_CHECKING:
    from egressproxy.snapshot import PolicyIndex

__all__ = [
    "DEFAULT_TIMEOUT",
    "EXT_AUTH_DENIED",
    "ExtAuthAnswer",
    "ExtAuthFate",
    "ExtAuthPolicy",
    "ExtAuthService",
    "ExtAuthTable",
    "HeaderEdit",
    "fate_of",
]

EXT_AUTH_DENIED = "ext-auth-denied"
DEFAULT_TIMEOUT = 1.0  # seconds (DESIGN.md 4.2: the extension `timeout`, default 1s)
DEFAULT_STATUS_ON_ERROR = 403  # Envoy's ext_authz `status_on_error` default


@dataclass(frozen=True, slots=True)
class ExtAuthService:
    """A GatewayExtension `type: ExtAuth`: where its ext_authz gRPC service is and how to call it."""

    ref: ObjectRef  # the GatewayExtension
    host: str  # canonical name (a Service's `<name>.<ns>.svc.cluster.local`) or IP literal, checked by the dialer
    port: int
    authority: str  # the HTTP/2 :authority (grpcService.authority, else host:port)
    timeout: float = DEFAULT_TIMEOUT
    fail_open: bool = False
    status_on_error: int = DEFAULT_STATUS_ON_ERROR
    headers_to_forward: frozenset[str] | None = None  # lower-case names; None: every header

    @property
    def key(self) -> tuple[str, int]:
        return (self.host, self.port)

    def to_dump(self) -> dict[str, Any]:
        return {
            "target": f"{self.host}:{self.port}",
            "authority": self.authority,
            "timeoutSeconds": self.timeout,
            "failOpen": self.fail_open,
            "statusOnError": self.status_on_error,
            "headersToForward": sorted(self.headers_to_forward) if self.headers_to_forward is not None else None,
        }


@dataclass(frozen=True, slots=True)
class ExtAuthPolicy:
    """A TrafficPolicy's `extAuth`: the service it calls, or None when it turns ext auth off at its scope."""

    ref: ObjectRef  # the TrafficPolicy
    service: ExtAuthService | None
    report: bool = False  # enforcementMode: Report
    context_extensions: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def to_dump(self) -> dict[str, Any]:
        return {
            "extension": str(self.service.ref) if self.service is not None else None,
            "disabled": self.service is None,
            "enforcementMode": "Report" if self.report else "Enforce",
            "contextExtensions": dict(sorted(self.context_extensions.items())),
        }


@dataclass(frozen=True, slots=True)
class ExtAuthTable:
    """Every TrafficPolicy `extAuth`, compiled, and the lookup for one routed request."""

    policies: Mapping[ObjectRef, ExtAuthPolicy] = field(default_factory=lambda: MappingProxyType({}))

    def for_request(
        self, index: PolicyIndex, route: ObjectRef | None, backend: ObjectRef | None, listener: str | None, rule: int | None
    ) -> ExtAuthPolicy | None:
        """The most specific TrafficPolicy with an `extAuth` that calls a service; None when there is none or
        the most specific one disables it."""
        if not self.policies:
            return None
        for attached in index.policies("TrafficPolicy", route=route, backend=backend, listener=listener, rule=rule):
            found = self.policies.get(attached.ref)
            if found is not None:
                return found if found.service is not None else None
        return None

    def to_dump(self) -> dict[str, Any]:
        return {str(ref): policy.to_dump() for ref, policy in sorted(self.policies.items())}


@dataclass(frozen=True, slots=True)
class HeaderEdit:
    """One header an OK answer sets upstream: `append` adds a value, else it replaces every value of `name`;
    `if_absent` only adds when the request has none, `if_present` only replaces an existing one."""

    name: str
    value: str
    append: bool = False
    if_absent: bool = False
    if_present: bool = False


@dataclass(frozen=True, slots=True)
class ExtAuthAnswer:
    """What the call ended with: `allowed` (with header edits), a denial as the service wrote it, or a failure
    (`failure` says why: unreachable, timed out, refused by the dialer, an answer that is no answer)."""

    allowed: bool
    headers_to_set: tuple[HeaderEdit, ...] = ()
    headers_to_remove: tuple[str, ...] = ()
    status: int | None = None  # the denied response's status (None: the service set none)
    headers: tuple[tuple[str, str], ...] = ()  # the denied response's headers
    body: bytes = b""
    failure: str | None = None

    @property
    def written_by_service(self) -> bool:
        """Whether a denial carries a response of the service's own (else the gateway's JSON denial is sent)."""
        return self.status is not None or bool(self.headers) or bool(self.body)


@dataclass(frozen=True, slots=True)
class ExtAuthFate:
    """The request's fate after ext auth: go on (`denial` None, `edits` to apply) or the `denial` to answer.

    `service_response` is set when the client gets the service's response rather than the gateway's JSON.
    `report` is the denial a Report-mode policy let pass; `note` one line for the log and the flow comment."""

    denial: Verdict | None
    answer: ExtAuthAnswer
    service_response: bool = False
    report: PolicyReport | None = None
    note: str = ""


def fate_of(policy: ExtAuthPolicy, answer: ExtAuthAnswer) -> ExtAuthFate:
    """Map an answer to the request's fate (docs/ext-auth.md):

    - OK: the request goes on with the answer's header edits;
    - denied: the service's response (its status, else 403), or 403 `ext-auth-denied` with the JSON denial
      when it wrote none;
    - a failure: `failOpen` lets it pass; else denied with `statusOnError` (default 403) `ext-auth-denied`;
    - Report mode: a denial passes and is a `PolicyReport`.
    """
    service = policy.service
    assert service is not None
    name = str(policy.ref)
    if answer.allowed:
        return ExtAuthFate(None, answer, note=f"ext auth {service.ref}: allow")
    if answer.failure is not None:
        if service.fail_open:
            return ExtAuthFate(None, ExtAuthAnswer(True), note=f"ext auth {service.ref}: {answer.failure}; failOpen lets it pass")
        detail = f"the ext_authz service of {service.ref} could not decide: {answer.failure} (fail closed)"
        denial = Verdict.deny(EXT_AUTH_DENIED, name, detail, service.status_on_error)
        return _denied(policy, denial, answer, False, f"ext auth {service.ref}: {answer.failure}; fail closed")
    status = answer.status if answer.status is not None else 403
    detail = f"the ext_authz service of {service.ref} denied the request"
    denial = Verdict.deny(EXT_AUTH_DENIED, name, detail, status)
    return _denied(policy, denial, answer, answer.written_by_service, f"ext auth {service.ref}: deny ({status})")


def _denied(policy: ExtAuthPolicy, denial: Verdict, answer: ExtAuthAnswer, own: bool, note: str) -> ExtAuthFate:
    if policy.report:
        report = PolicyReport(EXT_AUTH_DENIED, str(policy.ref), denial.message)
        return ExtAuthFate(None, ExtAuthAnswer(True), report=report, note=note + " (enforcementMode Report: passes)")
    return ExtAuthFate(denial, answer, own, note=note)
