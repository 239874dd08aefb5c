"""External auth's compiled forms, which TrafficPolicy decides, what an answer means, and the header edits."""

from __future__ import annotations

import pytest
from mitmproxy import http

from addons.ext_auth import _apply_edits
from egressproxy.compiler import CompileResult, compile_config
from egressproxy.config.loader import load_text
from egressproxy.config.problems import ObjectRef
from egressproxy.ext_auth import ExtAuthAnswer, ExtAuthPolicy, ExtAuthService, HeaderEdit, fate_of
from egressproxy.request_policies import PolicyReport

GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: http}]
  hostnames: [api.example.test]
  rules: [{name: open, matches: [{path: {type: PathPrefix, value: /open}}]}, {name: checked}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: opa}
spec:
  type: Static
  static: {hosts: [{host: opa.internal, port: 9191}]}
"""

EXTENSIONS = """
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: GatewayExtension
metadata: {name: authz}
spec:
  type: ExtAuth
  extAuth:
    grpcService: {backendRef: {name: authz, namespace: auth, port: 9001}, authority: authz.example}
    failOpen: true
    statusOnError: 503
    timeout: 250ms
    headersToForward: [Authorization, x-team]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: GatewayExtension
metadata: {name: static}
spec:
  type: ExtAuth
  extAuth: {grpcService: {backendRef: {group: gateway.kgateway.dev, kind: Backend, name: opa}}}
"""


def compile_text(text: str) -> CompileResult:
    loaded = load_text(text, "cfg.yaml")
    assert [str(p) for p in loaded.problems] == []
    return compile_config(loaded.resources)


def policy(name: str, target: str, ext_auth: str, extra: str = "") -> str:
    return f"""
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: {name}}}
spec:
  targetRefs: [{target}]
  extAuth: {ext_auth}
{extra}"""


ROUTE = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}"
RULE = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api, sectionName: open}"
GW = "{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}"


def test_an_extension_compiles_to_its_service_address_and_settings() -> None:
    result = compile_text(GATEWAY + EXTENSIONS + policy("checked", ROUTE, "{extensionRef: {name: authz}, contextExtensions: {a: b}}"))
    assert [str(p) for p in result.problems] == []
    assert result.snapshot is not None
    table = result.snapshot.compiled.ext_auth
    found = table.policies[ObjectRef("TrafficPolicy", "default", "checked")]
    assert found.service == ExtAuthService(
        ObjectRef("GatewayExtension", "default", "authz"), "authz.auth.svc.cluster.local", 9001, "authz.example",
        0.25, True, 503, frozenset({"authorization", "x-team"}),
    )
    assert dict(found.context_extensions) == {"a": "b"}
    assert result.snapshot.compiled.to_dump()["extAuth"]["TrafficPolicy/default/checked"]["extension"] == "GatewayExtension/default/authz"


def test_a_static_backend_is_called_at_its_first_host_with_the_defaults() -> None:
    result = compile_text(GATEWAY + EXTENSIONS + policy("checked", ROUTE, "{extensionRef: {name: static}}"))
    assert result.snapshot is not None
    service = result.snapshot.compiled.ext_auth.policies[ObjectRef("TrafficPolicy", "default", "checked")].service
    assert service is not None
    assert (service.host, service.port, service.authority, service.timeout, service.fail_open, service.status_on_error) == (
        "opa.internal", 9191, "opa.internal:9191", 1.0, False, 403)


@pytest.mark.parametrize("disable", ["{disable: {}}", "{disable: true}", "{enablement: DisableAll}"])
def test_the_most_specific_policy_decides_and_disable_turns_ext_auth_off(disable: str) -> None:
    text = GATEWAY + EXTENSIONS + policy("gateway-wide", GW, "{extensionRef: {name: authz}}") + policy("open", RULE, disable)
    result = compile_text(text)
    assert result.snapshot is not None
    snapshot = result.snapshot
    table, index = snapshot.compiled.ext_auth, snapshot.policies
    route = ObjectRef("HTTPRoute", "default", "api")
    applied = table.for_request(index, route, None, "http", 1)
    assert applied is not None and applied.ref == ObjectRef("TrafficPolicy", "default", "gateway-wide")
    assert table.for_request(index, route, None, "http", 0) is None


def test_an_extension_ref_to_another_type_is_a_problem() -> None:
    other = """
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: GatewayExtension
metadata: {name: proc}
spec:
  type: ExtProc
  extProc: {grpcService: {backendRef: {name: proc, port: 9002}}}
"""
    result = compile_text(GATEWAY + other + policy("checked", ROUTE, "{extensionRef: {name: proc}}"))
    assert [str(p) for p in result.problems] == [
        'cfg.yaml:37: TrafficPolicy/default/checked: spec.extAuth.extensionRef.name: GatewayExtension "default/proc" is type ExtProc, not ExtAuth'
    ]


SERVICE = ExtAuthService(ObjectRef("GatewayExtension", "default", "authz"), "authz", 9001, "authz:9001")
POLICY = ExtAuthPolicy(ObjectRef("TrafficPolicy", "default", "checked"), SERVICE)


def test_ok_passes_with_its_edits() -> None:
    answer = ExtAuthAnswer(True, (HeaderEdit("x-user", "alice"),))
    fate = fate_of(POLICY, answer)
    assert fate.denial is None and fate.answer is answer


def test_a_denial_keeps_the_services_status_or_is_403() -> None:
    own = fate_of(POLICY, ExtAuthAnswer(False, status=401, body=b"no"))
    assert own.denial is not None and own.denial.status_code == 401 and own.service_response
    assert (own.denial.reason, own.denial.policy) == ("ext-auth-denied", "TrafficPolicy/default/checked")
    bare = fate_of(POLICY, ExtAuthAnswer(False))
    assert bare.denial is not None and bare.denial.status_code == 403 and not bare.service_response


def test_a_failure_fails_closed_with_status_on_error_unless_fail_open() -> None:
    failed = ExtAuthAnswer(False, failure="no answer within the timeout (1s)")
    closed = fate_of(ExtAuthPolicy(POLICY.ref, SERVICE.__class__(**{**_fields(SERVICE), "status_on_error": 503})), failed)
    assert closed.denial is not None and closed.denial.status_code == 503 and not closed.service_response
    assert closed.denial.message.endswith("could not decide: no answer within the timeout (1s) (fail closed)")
    opened = fate_of(ExtAuthPolicy(POLICY.ref, SERVICE.__class__(**{**_fields(SERVICE), "fail_open": True})), failed)
    assert opened.denial is None and opened.answer == ExtAuthAnswer(True)


def test_report_mode_lets_a_denial_pass_as_a_report() -> None:
    fate = fate_of(ExtAuthPolicy(POLICY.ref, SERVICE, report=True), ExtAuthAnswer(False, status=401))
    assert fate.denial is None and fate.answer == ExtAuthAnswer(True)
    assert fate.report == PolicyReport("ext-auth-denied", "TrafficPolicy/default/checked",
                                       "the ext_authz service of GatewayExtension/default/authz denied the request")


def _fields(service: ExtAuthService) -> dict[str, object]:
    return {name: getattr(service, name) for name in ExtAuthService.__slots__}  # type: ignore[attr-defined]


def test_the_edits_set_append_and_remove_headers_as_envoy_does() -> None:
    headers = http.Headers([(b"x-user", b"mallory"), (b"x-trace", b"0"), (b"x-remove-me", b"1"), (b"host", b"a"),
                            (b"x-present", b"old")])
    answer = ExtAuthAnswer(
        True,
        (HeaderEdit("x-user", "alice"), HeaderEdit("x-trace", "1", append=True), HeaderEdit("x-absent", "3", if_absent=True),
         HeaderEdit("x-user", "nobody", if_absent=True), HeaderEdit("x-present", "new", if_present=True),
         HeaderEdit("x-missing", "4", if_present=True)),
        ("x-remove-me", "host"),
    )
    _apply_edits(headers, answer)
    assert headers.fields == (
        (b"x-user", b"alice"), (b"x-trace", b"0"), (b"host", b"a"), (b"x-present", b"new"), (b"x-trace", b"1"),
        (b"x-absent", b"3"),
    )
