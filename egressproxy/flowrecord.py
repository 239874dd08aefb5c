"""The one record per flow (and per client connection) that addons write their decisions into.

Addons never import each other: the listener-matching addon writes the listener and the connection's verdict
here, the routing addon reads it and adds the route and backend, sinks (metrics, captures, mitmweb comments)
read the finished record. It lives in `flow.metadata[RECORD_KEY]` and, for decisions taken before any flow
exists (CONNECT, ClientHello), in the connection table keyed by the client connection's id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from egressproxy.capture_records import CapturePlan
    from egressproxy.config.problems import ObjectRef
    from egressproxy.decision_reuse import DecisionMemo
    from egressproxy.outcomes import DialOutcome, GatewayFailure
    from egressproxy.prompt_guard import AiPolicy
    from egressproxy.rate_limits import RateLimit
    from egressproxy.taps import Tap
    from egressproxy.traffic_retries import RetryPolicy
    from egressproxy.upstreams import Upstream

__all__ = [
    "RECORD_KEY",
    "Identity",
    "Verdict",
    "ConnectionRecord",
    "FlowRecord",
    "UNKNOWN_IDENTITY",
    "BodyCopy",
    "FinishedConnection",
    "FinishedRequest",
    "GenAiCall",
    "Exchange",
    "HeaderFields",
    "Check",
    "Attempt",
]

# Header fields as mitmproxy keeps them (`Headers.fields`): an immutable tuple of (name, value) bytes pairs, so
# holding it costs no copy. Credential values in it are redacted by whoever prints them (egressproxy/access_log_format.py).
HeaderFields = tuple[tuple[bytes, bytes], ...]

RECORD_KEY = "egress"


@dataclass(frozen=True, slots=True)
class Identity:
    namespace: str
    service_account: str
    # Where the gateway took it from (the sidecar's environment, a proxy Basic user, a basicAuth policy): shown
    # in the flow's decision trace; not part of equality, so metrics and captures key on the name alone.
    source: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.service_account}"


UNKNOWN_IDENTITY = Identity("unknown", "unknown")


@dataclass(frozen=True, slots=True)
class Verdict:
    """allow or deny, with the DESIGN.md 4.1 reason and the deciding object as `Kind/namespace/name`."""

    allowed: bool
    reason: str = ""
    policy: str = ""
    status_code: int = 403
    message: str = ""

    @classmethod
    def allow(cls, reason: str = "", policy: str = "") -> "Verdict":
        return cls(True, reason, policy, 200, "")

    @classmethod
    def deny(cls, reason: str, policy: str = "", message: str = "", status_code: int = 403) -> "Verdict":
        return cls(False, reason, policy, status_code, message or reason)


@dataclass(frozen=True, slots=True)
class Check:
    """One step of a request's decision, in the order it was taken, for the flow's decision trace
    (egressproxy/decision_trace.py): `stage` (route, connect, policy, region, report, ext-auth, ai), the object
    consulted as `Kind/namespace/name`, its verdict (allow, deny, report) and why. Names and reasons only:
    never a header, body or credential value."""

    stage: str
    policy: str = ""
    verdict: str = ""
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One upstream candidate a failover or retry walk considered: which (`Backend provider (host:port)`) and
    how it went (`ok`, a retryability reason, `skipped`...), and whether the walk went on to the next."""

    candidate: str
    outcome: str
    went_on: bool = False


@dataclass(slots=True)
class ConnectionRecord:
    """What was decided about one client connection before (or without) any HTTP flow."""

    generation: int = 0  # the snapshot generation the decision was taken on
    host: str | None = None  # canonical CONNECT authority / SNI / DNS-bound name
    port: int | None = None
    ip: str | None = None  # original destination address (transparent) or resolved address
    sni: str | None = None
    carries: str | None = None  # "HTTP" | "TLS" | "TCP" | "UDP"
    listener: str | None = None
    route: str | None = None  # namespace/name
    backend: str | None = None
    verdict: Verdict | None = None
    intercept: bool = False
    identity: Identity = UNKNOWN_IDENTITY
    connect_host: str | None = None  # the canonical CONNECT authority, for SNI and Host agreement
    decided: bool = False  # the connection-level decision has been taken (next_layer / tls_clienthello)
    # (host, port) -> the upstream candidate a decision allowed this connection to dial (seam 1); the dial guard
    # refuses anything else, and the destination check reads the candidate's trust and its Backend's DNSPolicy.
    upstreams: dict[tuple[str, int], Upstream] = field(default_factory=dict)
    # (host, port) -> how the latest dial to it ended when it did not connect (seam 4): a denial Verdict (SSRF
    # guard, reverse DNS) or a GatewayFailure (unreachable, timeout), written by the dial guard and answered by
    # the gateway-errors addon; cleared when a new dial to it starts.
    dial_outcomes: dict[tuple[str, int], DialOutcome] = field(default_factory=dict)
    # (host, port) -> the address the CONNECT gate checked for a tunnel it opened; the dial uses exactly it.
    pinned_addresses: dict[tuple[str, int], str] = field(default_factory=dict)
    opened: float = field(default_factory=time.monotonic)
    # Bytes received from the client (`upstream`) and from every upstream (`downstream`) on this connection, as
    # on the wire (CONNECT heads and TLS records included); the metering layer adds to them (seam 5).
    bytes_upstream: int = 0
    bytes_downstream: int = 0
    metered: bool = False  # the metering layer wraps this connection's root layer
    requests: int = 0  # HTTP requests finished on this connection
    # Listener and route of the last request on a connection decided per request (explicit-proxy plain HTTP,
    # where the connection itself is never decided): the labels its finished record carries.
    request_listener: str | None = None
    request_route: str | None = None
    # The last CONNECT the gateway denied on this connection (authority, listener, verdict): its finished record
    # names them, so a denied tunnel leaves a trace (captures) though no HTTP flow finished and nothing was decided.
    denied_connect: tuple[str, str | None, Verdict] | None = None
    # The last request's routing decision, kept for the next request on this connection when it may be reused
    # (egressproxy/decision_reuse.py: same snapshot, listener, host, port, scheme and path).
    decision_memo: DecisionMemo | None = None


@dataclass(frozen=True, slots=True)
class BodyCopy:
    """The first bytes of a body as they passed (at most `captureBody.maxBytes`), its full size, and whether the
    copy stopped short of it. Bytes are as on the wire: a Content-Encoding is not undone."""

    data: bytes
    size: int
    truncated: bool


@dataclass(frozen=True, slots=True)
class GenAiCall:
    """A request to a GenAI provider: the semantic-conventions provider name, the model the client asked for,
    and the tokens the provider reported (`reported` False: the response reported no usage)."""

    provider: str
    request_model: str
    input_tokens: int = 0
    output_tokens: int = 0
    reported: bool = False


@dataclass(frozen=True, slots=True)
class Exchange:
    """The HTTP details of a finished request that access logs and traces print (DESIGN.md 4.2).

    `request_headers` are the headers as the client sent them (taken before any credential was injected);
    printers redact credential-bearing ones by name."""

    request_headers: HeaderFields = ()
    response_headers: HeaderFields = ()
    path: str = ""
    authority: str = ""
    scheme: str = ""
    protocol: str = ""  # HTTP/1.1, HTTP/2.0, ...
    bytes_received: int = 0  # request body bytes from the client
    bytes_sent: int = 0  # response body bytes to the client
    client_address: str | None = None  # ip:port of the client
    upstream_address: str | None = None  # ip:port the gateway dialled
    trace_id: str | None = None  # 32 hex digits when the request was traced
    span_id: str | None = None


@dataclass(frozen=True, slots=True)
class FinishedConnection:
    """What sinks receive when a client connection (or a UDP session) ends: passthrough and L4 tunnels too."""

    gateway: str
    listener: str | None
    route: str | None
    identity: Identity
    verdict: Verdict | None
    host: str | None
    sni: str | None
    carries: str | None  # "HTTP" | "TLS" | "TCP" | "UDP", None when the connection ended undecided
    started: float  # wall-clock seconds since the epoch
    duration: float  # seconds
    bytes_upstream: int  # received from the client
    bytes_downstream: int  # received from upstream
    requests: int = 0
    backend: str | None = None


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    """What sinks receive when an HTTP request ends (answered, denied or failed)."""

    gateway: str
    listener: str | None
    route: str | None
    backend: str | None
    identity: Identity
    verdict: Verdict | None
    decision: str  # allow | deny | error | unknown
    error: str | None  # x-egress-error reason
    host: str | None
    sni: str | None
    method: str
    url: str
    status: int | None  # None when no response was sent
    started: float  # wall-clock seconds since the epoch
    duration: float  # seconds, request to the end of the response
    request_body: BodyCopy | None = None
    response_body: BodyCopy | None = None
    gen_ai: GenAiCall | None = None  # a request to a GenAI provider, with the usage it reported
    exchange: Exchange | None = None
    # Headers as (lower-case name, value), credential values already redacted (egressproxy/capture_records.py),
    # and how the capture sink keeps this request (which bodies, content types); the URL is redacted likewise.
    request_headers: tuple[tuple[str, str], ...] = ()
    response_headers: tuple[tuple[str, str], ...] = ()
    capture: CapturePlan | None = None


@dataclass(slots=True)
class FlowRecord:
    """One request's record: the connection's decision plus what the request itself matched."""

    gateway: str = ""
    listener: str | None = None
    route: str | None = None
    backend: str | None = None
    rule: int | None = None
    host: str | None = None
    port: int | None = None
    verdict: Verdict | None = None
    identity: Identity = UNKNOWN_IDENTITY
    generation: int = 0
    error: str | None = None  # x-egress-error reason, when the gateway failed the request
    failure: GatewayFailure | None = None  # why this request's upstream failed, as the failing part saw it (TLS)
    request_timeout: float | None = None  # the matched rule's `timeouts.request`, overriding the gateway's
    attempt_timeout: float | None = None  # the rule's `timeouts.backendRequest`: a failover attempt's head timeout
    retry: RetryPolicy | None = None  # the TrafficPolicy retries that apply (egressproxy/traffic_retries.py)
    route_ref: ObjectRef | None = None  # the matched route, for policies attached to it (credentials)
    upstream: Upstream | None = None  # the candidate this request is sent to (seam 1)
    candidates: tuple[Upstream, ...] = ()  # every candidate of the decision, in try order (failover walks them)
    hop: str | None = None  # the failover walk's id when the request goes through the upstream hop
    started: float = field(default_factory=time.monotonic)
    extra: dict[str, Any] = field(default_factory=dict)
    request_body: BodyCopy | None = None  # the tap chain's capped copies (seam 5)
    response_body: BodyCopy | None = None
    rate_limit: RateLimit | None = None  # the request's budget: its RateLimitPolicies merged (decisions)
    ai: AiPolicy | None = field(default=None, repr=False)  # TrafficPolicy `ai` of the request (decisions)
    # Taps other addons put on this response's body, in the order they run, before the capture copy (seam 5).
    response_taps: list[Tap] = field(default_factory=list)
    gen_ai: GenAiCall | None = None  # set on the request hook for a GenAI provider; usage added at the end
    request_headers: HeaderFields | None = None  # as the client sent them (before credential injection)
    request_path: str | None = None  # likewise (an injected query credential is not in it)
    trace_id: str | None = None  # the request's span, when traced (egressproxy/tracing.py)
    span_id: str | None = None
    # The decision trace's typed parts (egressproxy/decision_trace.py renders them once, when the flow ends).
    checks: list[Check] = field(default_factory=list)  # every policy consulted, in order
    attempts: list[Attempt] = field(default_factory=list)  # the failover walk's candidates, as tried
    credential: str | None = None  # the source of the injected credential (`Kind/ns/name`), never its value
    error_detail: str | None = None  # the cause of `error`, as the client's x-egress-error body says it
    # Request steps with nothing to do under the snapshot this request was routed with: the HookTable skips
    # their hooks (egressproxy/runtime/idle_steps.py). Empty until routed.
    idle_steps: frozenset[str] = frozenset()

    @property
    def decision(self) -> str:
        if self.error:
            return "error"
        if self.verdict is None:
            return "unknown"
        return "allow" if self.verdict.allowed else "deny"

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        """A plain dict of plain values, not a FlowRecord.

        mitmproxy deep-copies `flow.metadata` into a flow's state (`Flow.get_state`), and that state is what it
        serializes with tnetstring, which takes only plain types: mitmweb's /flows/dump and Save, `mitmdump -w`,
        `flow.copy()` for replay and duplicate. A copied flow thus keeps the record as data, and `flow_record()`
        gives it a fresh FlowRecord if it is decided again (a replay is a new request).
        """
        return _plain(self)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if callable(getattr(value, "to_dump", None)):  # its own redacted shape (an Upstream's provider holds a key)
        return _plain(value.to_dump())
    if hasattr(value, "__dataclass_fields__"):
        # A field kept out of the repr holds a credential (a Redis password, a key): it stays out of copies too.
        fields = value.__dataclass_fields__
        return {name: _plain(getattr(value, name)) for name, f in fields.items() if f.repr}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return str(value)
