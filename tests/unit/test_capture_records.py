"""egressproxy/capture_records.py: the capture document, redaction, and the capture plan a snapshot gives."""

from __future__ import annotations

import base64
import textwrap

import pytest

from egressproxy.capture_records import (
    ALWAYS_REDACTED,
    REDACTED,
    CapturePlan,
    PendingDocument,
    capture_plan,
    connection_document,
    keeps_body_of,
    redacted_headers,
    redacted_url,
    request_document,
    rfc3339,
    wants_connection,
)
from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_text
from egressproxy.config.problems import ObjectRef
from egressproxy.flowrecord import BodyCopy, FinishedConnection, FinishedRequest, FlowRecord, Identity, Verdict
from egressproxy.record_queue import document_weight
from egressproxy.upstreams import Upstream

JSON_TYPES = ("application/json", "text/event-stream")


def finished(**kw: object) -> FinishedRequest:
    base: dict[str, object] = dict(
        gateway="default/eg", listener="https", route="default/api", backend=None, identity=Identity("ns", "sa"),
        verdict=Verdict.allow(), decision="allow", error=None, host="api.example.test", sni="api.example.test",
        method="POST", url="https://api.example.test/v1", status=200, started=1_700_000_000.25, duration=0.0125,
    )
    base.update(kw)
    return FinishedRequest(**base)  # type: ignore[arg-type]


def test_the_document_has_the_contract_fields() -> None:
    doc = request_document(
        finished(
            request_headers=(("content-type", "application/json"),),
            request_body=BodyCopy(b'{"a": 1}', 8, False),
        ),
        CapturePlan(content_types=JSON_TYPES),
    )
    assert {"time", "identity", "gateway", "listener", "route", "backend", "method", "url", "host", "status",
            "durationMs", "request", "response"} <= set(doc)
    assert doc["time"] == "2023-11-14T22:13:20.250Z"
    assert doc["identity"] == {"namespace": "ns", "serviceAccount": "sa"}
    assert doc["durationMs"] == 12.5
    assert doc["request"] == {"headers": {"content-type": "application/json"}, "body": '{"a": 1}',
                              "bodyEncoding": "utf-8", "size": 8, "truncated": False}
    assert doc["response"] == {"headers": {}, "body": None, "bodyEncoding": None, "size": 0, "truncated": False}


@pytest.mark.parametrize(
    ("data", "truncated", "body", "encoding"),
    [
        ("é".encode() * 3, False, "ééé", "utf-8"),
        ("é".encode() * 3 + b"\xc3", True, "ééé", "utf-8"),  # the cap split a character: the stray byte goes
        (b"\x00\xff\xfe", False, base64.b64encode(b"\x00\xff\xfe").decode(), "base64"),
    ],
)
def test_bodies_are_utf8_when_text_else_base64(data: bytes, truncated: bool, body: str, encoding: str) -> None:
    copy = BodyCopy(data, len(data) + (10 if truncated else 0), truncated)
    doc = request_document(
        finished(request_headers=(("content-type", "application/json; charset=utf-8"),), request_body=copy),
        CapturePlan(content_types=JSON_TYPES),
    )
    assert (doc["request"]["body"], doc["request"]["bodyEncoding"]) == (body, encoding)
    assert doc["request"]["truncated"] is truncated and doc["request"]["size"] == copy.size


@pytest.mark.parametrize(
    ("content_type", "wanted", "kept"),
    [
        ("application/json", True, True),
        ("Application/JSON; charset=utf-8", True, True),
        ("text/plain", True, False),
        (None, True, False),
        ("application/json", False, False),  # LoggingPolicy narrowed this direction
    ],
)
def test_a_body_is_kept_for_listed_content_types_in_a_captured_direction(
    content_type: str | None, wanted: bool, kept: bool
) -> None:
    headers = (("content-type", content_type),) if content_type else ()
    doc = request_document(
        finished(response_headers=headers, response_body=BodyCopy(b"{}", 2, False)),
        CapturePlan(response_body=wanted, content_types=JSON_TYPES),
    )
    assert (doc["response"]["body"] is not None) is kept
    assert doc["response"]["size"] == 2


def test_headers_keep_their_names_with_values_redacted() -> None:
    fields = [("Authorization", "Bearer x"), ("Cookie", "a=b"), ("X-Custom", "v"), ("x-token", "t")]
    assert redacted_headers(fields, ALWAYS_REDACTED | {"x-token"}) == (
        ("authorization", REDACTED), ("cookie", REDACTED), ("x-custom", "v"), ("x-token", REDACTED),
    )
    assert {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie",
            "set-cookie"} <= ALWAYS_REDACTED


def test_repeated_headers_are_joined() -> None:
    doc = request_document(finished(response_headers=(("vary", "a"), ("vary", "b"))))
    assert doc["response"]["headers"] == {"vary": "a, b"}


def test_query_parameters_a_credential_uses_are_redacted() -> None:
    url = "https://maps.example.test/geo?q=x&key=s3cret&z=1"
    assert redacted_url(url, frozenset({"key"})) == "https://maps.example.test/geo?q=x&key=%5BREDACTED%5D&z=1"
    assert redacted_url(url, frozenset({"other"})) == url
    assert redacted_url(url, frozenset()) == url


def test_injected_values_are_scrubbed_from_bodies() -> None:
    plan = CapturePlan(content_types=JSON_TYPES, secret_values=(b"s3cret-value", b"s3cret%2Bvalue"))
    body = b'{"echo": "s3cret-value", "url": "/x?key=s3cret%2Bvalue"}'
    doc = request_document(
        finished(response_headers=(("content-type", "application/json"),), response_body=BodyCopy(body, len(body), False)),
        plan,
    )
    assert "s3cret" not in doc["response"]["body"]
    assert "s3cret" not in repr(plan)


def test_a_pending_document_is_the_request_document_built_once_when_read() -> None:
    body = bytes(range(256)) * 8  # binary: base64 in the document, 4/3 of the bytes
    plan = CapturePlan(content_types=("application/octet-stream",), secret_values=(b"s3cret-value",))
    record = finished(
        capture=plan,
        request_headers=(("content-type", "application/octet-stream"),),
        request_body=BodyCopy(body, len(body), False),
        response_headers=(("content-type", "application/octet-stream"),),
        response_body=BodyCopy(b"s3cret-value" + body, len(body) + 12, False),
    )
    pending = PendingDocument(record)
    assert pending._document is None  # nothing built where it was queued (the event loop)
    document = pending.document()
    assert document == request_document(record) and pending.document() is document
    assert "s3cret" not in repr(document)
    assert pending.weight >= document_weight(document)  # the queue's byte bound still holds


def connection(**kw: object) -> FinishedConnection:
    base: dict[str, object] = dict(
        gateway="default/eg", listener="tls", route="default/tunnel", identity=Identity("ns", "sa"),
        verdict=Verdict.allow(), host="tunnel.example.test", sni="tunnel.example.test", carries="TLS",
        started=1_700_000_000.0, duration=1.5, bytes_upstream=517, bytes_downstream=4096,
    )
    base.update(kw)
    return FinishedConnection(**base)  # type: ignore[arg-type]


def test_a_tunnel_document_has_bytes_each_way_and_no_bodies() -> None:
    doc = connection_document(connection())
    assert doc["kind"] == "connection" and doc["sni"] == "tunnel.example.test"
    assert doc["request"]["size"] == 517 and doc["response"]["size"] == 4096
    assert doc["request"]["body"] is None and doc["method"] is None
    assert doc["durationMs"] == 1500.0 and doc["decision"] == "allow"


def test_denied_connections_carry_their_verdict() -> None:
    doc = connection_document(connection(verdict=Verdict.deny("sni-mismatch", "EgressGateway/default/eg")))
    assert doc["decision"] == "deny"
    assert doc["verdict"] == {"allowed": False, "reason": "sni-mismatch", "policy": "EgressGateway/default/eg"}


@pytest.mark.parametrize(
    ("kw", "wanted"),
    [
        ({}, True),
        ({"requests": 3}, False),  # its HTTP requests have records of their own
        ({"host": None, "verdict": None}, False),  # nothing was learnt about it
        ({"host": None}, True),
    ],
)
def test_which_connections_get_a_record(kw: dict[str, object], wanted: bool) -> None:
    assert wants_connection(connection(**kw)) is wanted


def test_rfc3339_rounds_to_milliseconds() -> None:
    assert rfc3339(0.9996) == "1970-01-01T00:00:01.000Z"


def test_rfc3339_remembers_a_second_without_reusing_it_for_another() -> None:
    """The formatted second is cached: going back and forth between seconds must still give each its own."""
    assert rfc3339(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"
    assert rfc3339(1_700_000_000.5) == "2023-11-14T22:13:20.500Z"
    assert rfc3339(1_700_000_061.0) == "2023-11-14T22:14:21.000Z"
    assert rfc3339(1_700_000_000.999) == "2023-11-14T22:13:20.999Z"
    assert rfc3339(1_700_000_000.9996) == "2023-11-14T22:13:21.000Z"


def test_header_maps_are_the_same_with_and_without_repeated_names() -> None:
    plain = request_document(finished(request_headers=(("a", "1"), ("b", "2"))))
    repeated = request_document(finished(request_headers=(("a", "1"), ("b", "2"), ("a", "3"))))
    assert plain["request"]["headers"] == {"a": "1", "b": "2"}
    assert list(repeated["request"]["headers"].items()) == [("a", "1, 3"), ("b", "2")]


def test_content_type_prefixes_match_in_any_case_and_follow_the_configured_tuple() -> None:
    assert keeps_body_of("Application/JSON; charset=utf-8", ("application/json",))
    assert keeps_body_of("application/json", ("APPLICATION/JSON",))
    assert not keeps_body_of("application/json", ("text/",))
    assert keeps_body_of("text/plain", ("text/",))


CONFIG = textwrap.dedent(
    """
    apiVersion: clrk.apoxy.dev/v1alpha1
    kind: EgressGateway
    metadata: {name: eg}
    spec:
      listeners: [{name: http, protocol: HTTP}]
      otlp: {captureBody: {includeContentTypes: [application/json]}}
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: api}
    spec:
      parentRefs: [{name: eg, sectionName: http}]
      hostnames: [api.example.test]
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: other}
    spec:
      parentRefs: [{name: eg, sectionName: http}]
      hostnames: [other.example.test]
    ---
    apiVersion: clrk.apoxy.dev/v1alpha1
    kind: LoggingPolicy
    metadata: {name: api-logging}
    spec:
      targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]
      captureResponse: true
      redactHeaders: [X-Session]
    ---
    apiVersion: clrk.apoxy.dev/v1alpha1
    kind: CredentialInjectionPolicy
    metadata: {name: key}
    spec:
      targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]
      secretRef: {name: key}
      target: QueryParam
      queryParamName: apikey
    ---
    apiVersion: clrk.apoxy.dev/v1alpha1
    kind: CredentialInjectionPolicy
    metadata: {name: header}
    spec:
      targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]
      secretRef: {name: key}
      target: Header
      headerName: X-Upstream-Key
    ---
    apiVersion: v1
    kind: Secret
    metadata: {name: key}
    stringData: {token: the-key-value}
    """
)


def plan_for(route: str) -> CapturePlan:
    loaded = load_text(CONFIG, "cfg.yaml")
    assert [str(p) for p in loaded.problems] == []
    result = compile_config(loaded.resources)
    assert result.snapshot is not None, [str(p) for p in result.problems]
    record = FlowRecord(listener="http", route_ref=ObjectRef("HTTPRoute", "default", route))
    record.upstream = Upstream(f"{route}.example.test", 80, "http")
    return capture_plan(result.snapshot, record)


def test_the_plan_narrows_bodies_and_redacts_what_the_route_injects() -> None:
    plan = plan_for("api")
    assert (plan.request_body, plan.response_body) == (False, True)  # a LoggingPolicy applies: only what it asks
    assert plan.content_types == ("application/json",)
    assert {"x-session", "x-upstream-key", "authorization"} <= plan.redact_headers
    assert "apikey" in plan.redact_query
    assert b"the-key-value" in plan.secret_values


def test_without_a_logging_policy_both_bodies_are_captured() -> None:
    plan = plan_for("other")
    assert (plan.request_body, plan.response_body) == (True, True)
    assert plan.redact_headers == ALWAYS_REDACTED and plan.secret_values == ()


def test_no_snapshot_means_the_default_plan() -> None:
    assert capture_plan(None, FlowRecord()) == CapturePlan()


def test_plans_are_remembered_per_snapshot_and_key() -> None:
    from egressproxy.capture_records import CapturePlans

    loaded = load_text(CONFIG, "cfg.yaml")
    first = compile_config(loaded.resources).snapshot
    second = compile_config(loaded.resources).snapshot
    plans = CapturePlans()
    api = FlowRecord(listener="http", route_ref=ObjectRef("HTTPRoute", "default", "api"))
    api.upstream = Upstream("api.example.test", 80, "http")
    other = FlowRecord(listener="http", route_ref=ObjectRef("HTTPRoute", "default", "other"))
    other.upstream = Upstream("other.example.test", 80, "http")
    plan = plans.plan(first, api)
    assert plans.plan(first, api) is plan and plan == capture_plan(first, api)
    assert plans.plan(first, other) != plan  # another route, another plan
    assert plans.plan(second, api) is not plan and plans.plan(second, api) == plan  # a reload starts afresh
