"""What capture keeps of a finished record: pure functions from a finished request or connection to the
`egressproxy captures --json` document (DESIGN.md 4.1 names its fields), and the redaction that goes first.

Redaction happens before anything leaves the hot path: the finished request's headers and URL are already
redacted when a sink sees them (`redacted_headers`, `redacted_url`), so no sink - the store, OTLP, an access log -
can leak an injected credential. Redaction keeps the name and replaces the value; it covers the headers that
carry credentials by convention (`ALWAYS_REDACTED`), every header and query parameter a credential of the
gateway was injected into (the credential table knows them), and the LoggingPolicy's `redactHeaders`.

Bodies are the tap chain's capped copies (bytes as on the wire, at most `captureBody.maxBytes` per direction).
A body is kept only when its direction is captured (LoggingPolicy `captureRequest` / `captureResponse`) and its
Content-Type starts with one of `includeContentTypes`; otherwise the document says `body: null` with the size.
"""

from __future__ import annotations

import base64
import functools
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

from egressproxy.flowrecord import BodyCopy, FinishedConnection, FinishedRequest, Identity, Verdict

if TYPE_CHECKING:
    from egressproxy.flowrecord import FlowRecord
    from egressproxy.snapshot import Snapshot

__all__ = [
    "ALWAYS_REDACTED",
    "REDACTED",
    "CapturePlan",
    "CapturePlans",
    "Document",
    "PendingDocument",
    "document_of",
    "capture_plan",
    "redacted_headers",
    "redacted_url",
    "request_document",
    "connection_document",
    "wants_connection",
    "keeps_body_of",
    "GEN_AI_PROVIDER_NAMES",
]

REDACTED = "[REDACTED]"
# Headers that carry credentials by convention, in either direction (DESIGN.md 4.1 and issue 12). SigV4's session
# token is a credential too; its signature (in Authorization) is covered by name.
ALWAYS_REDACTED = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "set-cookie",
        "x-amz-security-token",
    }
)
# Provider kinds of an AI Backend -> OpenTelemetry GenAI `gen_ai.provider.name` values.
GEN_AI_PROVIDER_NAMES: Mapping[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertexAi": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "azureOpenai": "azure.ai.openai",
    "azureopenai": "azure.ai.openai",
    "mistral": "mistral_ai",
    "deepseek": "deepseek",
    "groq": "groq",
    "perplexity": "perplexity",
    "xai": "x_ai",
    "cohere": "cohere",
}


@dataclass(frozen=True, slots=True)
class CapturePlan:
    """How one request is captured: which bodies, of which content types, and what is redacted."""

    request_body: bool = True
    response_body: bool = True
    content_types: tuple[str, ...] = ()
    redact_headers: frozenset[str] = ALWAYS_REDACTED
    redact_query: frozenset[str] = frozenset()
    provider: str | None = None  # gen_ai.provider.name when the request goes to an AI provider
    # The values the gateway injects on this request, as sent and URL-encoded: scrubbed from captured bodies too
    # (an origin that echoes its request - the URL, a header - must not put the credential in the store).
    secret_values: tuple[bytes, ...] = field(default=(), repr=False)


def capture_plan(snapshot: "Snapshot | None", record: "FlowRecord") -> CapturePlan:
    """The plan for `record`'s request: the effective LoggingPolicy (Rule > Route > Backend > Listener > Gateway)
    narrows which bodies are kept; redaction adds the names of the credential the gateway injects."""
    if snapshot is None:
        return CapturePlan()
    upstream = record.upstream
    backend = upstream.backend.ref if upstream is not None and upstream.backend is not None else None
    policy = snapshot.policies.effective(
        "LoggingPolicy", route=record.route_ref, backend=backend, listener=record.listener, rule=record.rule
    )
    headers = set(ALWAYS_REDACTED)
    headers.update(str(h).lower() for h in policy.get("redactHeaders", ()))
    query: set[str] = set()
    secrets: list[bytes] = []
    if upstream is not None:
        credential = snapshot.compiled.credentials.for_request(upstream, record.route_ref, record.rule, record.listener)
        if credential is not None:
            headers.update(credential.removes)
            query.update(credential.removes_query)
            secrets = _secret_forms([h.value for h in credential.headers] + [q.value for q in credential.query])
    provider = upstream.provider if upstream is not None else None
    gateway = snapshot.gateway
    return CapturePlan(
        request_body=bool(policy.get("captureRequest", False)) if policy else True,
        response_body=bool(policy.get("captureResponse", False)) if policy else True,
        content_types=tuple(t.lower() for t in gateway.capture_content_types),
        redact_headers=frozenset(headers),
        redact_query=frozenset(query),
        provider=GEN_AI_PROVIDER_NAMES.get(provider.kind, provider.kind.lower()) if provider is not None else None,
        secret_values=tuple(secrets),
    )


def _secret_forms(values: Iterable[str]) -> list[bytes]:
    """Each value as sent and as a URL query encodes it (longest first, so a longer form is replaced whole)."""
    forms: set[bytes] = set()
    for value in values:
        if len(value) < 4:  # too short to scrub without mangling ordinary text (and no real credential)
            continue
        forms.add(value.encode())
        forms.add(quote_plus(value).encode())
        forms.add(quote(value, safe="").encode())
    return sorted(forms, key=len, reverse=True)


class CapturePlans:
    """`capture_plan` remembered per serving snapshot: a request's plan depends only on its route, rule, listener
    and upstream (Backend and provider), which repeat; a new snapshot starts a new table (bounded to 4096)."""

    def __init__(self) -> None:
        self._snapshot: object = None
        self._plans: dict[tuple[Any, ...], CapturePlan] = {}

    def plan(self, snapshot: "Snapshot | None", record: "FlowRecord") -> CapturePlan:
        if snapshot is not self._snapshot or len(self._plans) > 4096:
            self._snapshot, self._plans = snapshot, {}
        upstream = record.upstream
        key = (
            record.route_ref, record.rule, record.listener,
            None if upstream is None else (upstream.backend.ref if upstream.backend is not None else None),
            None if upstream is None else upstream.provider,
            upstream is None,
        )
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = capture_plan(snapshot, record)
        return plan


def redacted_headers(fields: Iterable[tuple[str, str]], names: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """Headers as (lower-case name, value), the value of each name in `names` replaced by `REDACTED`."""
    out = []
    for name, value in fields:
        lower = name.lower()
        out.append((lower, REDACTED if lower in names else value))
    return tuple(out)


def redacted_url(url: str, names: frozenset[str]) -> str:
    """`url` with the value of each query parameter in `names` replaced (the URL is unchanged otherwise)."""
    if not names or "?" not in url:
        return url
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(k in names for k, _ in pairs):
        return url
    query = urlencode([(k, REDACTED if k in names else v) for k, v in pairs])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def wants_connection(record: FinishedConnection) -> bool:
    """A connection gets its own capture record when no HTTP request on it has one: tunnels (passthrough, TCP,
    UDP), denied CONNECTs and handshakes, and intercepted connections that ended before a request."""
    return record.requests == 0 and (record.host is not None or record.verdict is not None)


def request_document(record: FinishedRequest, plan: CapturePlan | None = None) -> dict[str, Any]:
    """The `captures --json` document of one HTTP request (without `id`, which the store assigns)."""
    plan = plan or record.capture or CapturePlan()
    return {
        "kind": "request",
        "time": rfc3339(record.started),
        "identity": _identity(record.identity),
        "gateway": record.gateway,
        "listener": record.listener,
        "route": record.route,
        "backend": record.backend,
        "method": record.method,
        "url": record.url,
        "host": record.host,
        "status": record.status,
        "durationMs": round(record.duration * 1000, 3),
        "decision": record.decision,
        "verdict": _verdict(record.verdict),
        "error": record.error,
        "provider": plan.provider,
        "request": _part(record.request_headers, record.request_body, plan.request_body, plan),
        "response": _part(record.response_headers, record.response_body, plan.response_body, plan),
    }


class PendingDocument:
    """A finished request's capture document, built by the writer thread that first reads it (the store's or the
    OTLP export's), not on the event loop, and built once when both read it. The record is immutable and already
    redacted, so building it later gives the same document."""

    __slots__ = ("record", "weight", "_document", "_lock")

    def __init__(self, record: FinishedRequest) -> None:
        self.record = record
        self.weight = _request_weight(record)
        self._document: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def document(self) -> dict[str, Any]:
        with self._lock:
            if self._document is None:
                self._document = request_document(self.record)
            return self._document


Document = dict[str, Any] | PendingDocument


def document_of(item: Document) -> dict[str, Any]:
    return item.document() if isinstance(item, PendingDocument) else item


def _request_weight(record: FinishedRequest) -> int:
    """At least `record_queue.document_weight` of its document: body texts are at most 4/3 of the bytes copied."""
    weight = 1024
    for copy in (record.request_body, record.response_body):
        if copy is not None:
            weight += (len(copy.data) * 4 + 2) // 3 + 4
    return weight


def connection_document(record: FinishedConnection) -> dict[str, Any]:
    """The document of a connection without HTTP records: bytes each way as the sizes, no headers or bodies."""
    decision = "unknown" if record.verdict is None else "allow" if record.verdict.allowed else "deny"
    return {
        "kind": "connection",
        "time": rfc3339(record.started),
        "identity": _identity(record.identity),
        "gateway": record.gateway,
        "listener": record.listener,
        "route": record.route,
        "backend": record.backend,
        "method": None,
        "url": None,
        "host": record.host,
        "status": None,
        "durationMs": round(record.duration * 1000, 3),
        "decision": decision,
        "verdict": _verdict(record.verdict),
        "sni": record.sni,
        "carries": record.carries,
        "request": _empty_part(record.bytes_upstream),
        "response": _empty_part(record.bytes_downstream),
    }


_last_second: tuple[int, str] = (-1, "")  # (whole second, its formatted prefix): records come in time order


def rfc3339(epoch: float) -> str:
    """UTC with milliseconds: 2026-12-06T05:00:00.123Z.

    The formatted second is remembered (one tuple, replaced whole, so threads may share it): a writer's batch of
    hundreds of records falls into a few seconds, and `strftime(gmtime())` per record was a tenth of building one."""
    global _last_second
    whole = int(epoch)
    millis = int(round((epoch - whole) * 1000))
    if millis == 1000:
        whole, millis = whole + 1, 0
    second, prefix = _last_second
    if second != whole:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _last_second = (whole, prefix)
    return f"{prefix}.{millis:03d}Z"


def _identity(identity: Identity) -> dict[str, str]:
    return {"namespace": identity.namespace, "serviceAccount": identity.service_account}


def _verdict(verdict: Verdict | None) -> dict[str, Any] | None:
    if verdict is None:
        return None
    return {"allowed": verdict.allowed, "reason": verdict.reason or None, "policy": verdict.policy or None}


def _empty_part(size: int) -> dict[str, Any]:
    return {"headers": {}, "body": None, "bodyEncoding": None, "size": size, "truncated": False}


def keeps_body_of(content_type: str, include: tuple[str, ...]) -> bool:
    """Whether a body of this Content-Type is ever kept (`captureBody.includeContentTypes`, prefixes, any case).

    The one rule for both ends: the body tap copies nothing of a response this refuses (addons/body_taps.py: a
    download or a stream held open would otherwise carry up to `maxBytes` of copy each), and `_part` drops it.
    """
    if not include:
        return False
    return content_type.lower().startswith(_lowered(include))


@functools.lru_cache(maxsize=16)
def _lowered(include: tuple[str, ...]) -> tuple[str, ...]:
    """The prefixes in lower case, once per configured tuple (it is asked on the event loop per response)."""
    return tuple(t.lower() for t in include)


def _part(headers: tuple[tuple[str, str], ...], copy: BodyCopy | None, wanted: bool, plan: CapturePlan) -> dict[str, Any]:
    header_map = _header_map(headers)
    if copy is None:
        return {"headers": header_map, "body": None, "bodyEncoding": None, "size": 0, "truncated": False}
    content_type = header_map.get("content-type", "")
    if not wanted or not copy.size or not keeps_body_of(content_type, plan.content_types):
        return {"headers": header_map, "body": None, "bodyEncoding": None, "size": copy.size, "truncated": False}
    text, encoding = _encoded(_scrubbed(copy.data, plan.secret_values), copy.truncated)
    return {"headers": header_map, "body": text, "bodyEncoding": encoding, "size": copy.size, "truncated": copy.truncated}


def _scrubbed(data: bytes, secrets: tuple[bytes, ...]) -> bytes:
    for secret in secrets:
        if secret in data:
            data = data.replace(secret, REDACTED.encode())
    return data


def _header_map(headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Lower-case name -> value; a repeated header's values joined with ", " (RFC 9110 5.3)."""
    out = dict(headers)
    if len(out) == len(headers):
        return out  # no name repeats (the usual case): built in C
    out = {}
    for name, value in headers:
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _encoded(data: bytes, truncated: bool) -> tuple[str, str]:
    """utf-8 when the bytes are text (a cut may split the last character: up to 3 bytes are dropped), else base64."""
    for drop in range(4 if truncated else 1):
        try:
            return data[: len(data) - drop].decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            continue
    return base64.b64encode(data).decode("ascii"), "base64"

