"""compiler: reference resolution, problems at file:line:path, attachment, statuses, gateway selection, secrets."""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import textwrap
from pathlib import Path

import pytest

from egressproxy.ca import create_ca, secret_manifest
from egressproxy.compiler import CompileResult, compile_config, read_secrets_dir
from egressproxy.config.loader import load_text
from egressproxy.config.problems import ObjectRef
from egressproxy.snapshot import Condition, Snapshot
from tests.support.geoip import country_db

FILE = "cfg.yaml"

GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: gw}
spec:
  defaultPolicy: deny-all
  listeners:
  - name: https
    protocol: HTTPS
    tls: {mode: Terminate, caCertRef: {name: egress-ca}}
  - name: http
    protocol: HTTP
  - name: pass
    protocol: TLS
    tls: {mode: Passthrough}
  - name: tcp
    protocol: TCP
  - name: udp
    protocol: UDP
    port: 53
"""


@functools.cache
def ca_yaml(name: str = "egress-ca") -> str:
    cert, key = create_ca("test-ca")
    return secret_manifest(name, cert, key)


def compile_yaml(text: str, gateway: str | None = None, with_ca: bool = True, **kw: object) -> CompileResult:
    full = (ca_yaml() + "---\n" if with_ca else "") + textwrap.dedent(text)
    loaded = load_text(full, FILE)
    assert [str(p) for p in loaded.problems] == []
    return compile_config(loaded.resources, gateway_name=gateway, **kw)  # type: ignore[arg-type]


def compiled(text: str, **kw: object) -> Snapshot:
    result = compile_yaml(text, **kw)
    assert [str(p) for p in result.problems] == []
    assert result.ok and result.snapshot is not None
    return result.snapshot


def line_of(text: str, needle: str, with_ca: bool = True) -> int:
    """1-based line of the first line containing `needle` in the compiled text."""
    full = (ca_yaml() + "---\n" if with_ca else "") + textwrap.dedent(text)
    for number, line in enumerate(full.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the text")


def conditions(result: CompileResult, ref: ObjectRef) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in result.statuses[ref]}


def doc(kind_line: str, body: str) -> str:
    return "---\n" + kind_line + textwrap.dedent(body)


HTTP_ROUTE = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
TLS_ROUTE = "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\n"
TCP_ROUTE = "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\n"
UDP_ROUTE = "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\n"
L4_ROUTE = "apiVersion: clrk.apoxy.dev/v1alpha1\nkind: EgressL4Route\n"
BACKEND = "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: Backend\n"
DIRECT = "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: DirectResponse\n"
APOXY = "apiVersion: clrk.apoxy.dev/v1alpha1\n"
SECRET = "apiVersion: v1\nkind: Secret\n"


# --- gateway selection ---------------------------------------------------------------------------------------


def two_gateways() -> str:
    other = GATEWAY.replace("name: gw}", "name: other, namespace: team}")
    return GATEWAY + "---\n" + other.replace("{name: egress-ca}", "{name: egress-ca, namespace: default}")


def test_the_only_gateway_is_served() -> None:
    snap = compiled(GATEWAY)
    assert snap.gateway.ref == ObjectRef("EgressGateway", "default", "gw")
    assert snap.gateways == (ObjectRef("EgressGateway", "default", "gw"),)


def test_several_gateways_without_a_choice_is_a_problem() -> None:
    result = compile_yaml(two_gateways())
    assert result.snapshot is None
    assert any("several EgressGateways" in p.message and "--gateway" in p.message for p in result.problems)


@pytest.mark.parametrize("wanted", ["other", "team/other"])
def test_gateway_chosen_by_name_or_namespace_and_name(wanted: str) -> None:
    result = compile_yaml(two_gateways(), gateway=wanted)
    assert result.ok and result.snapshot is not None
    assert result.snapshot.gateway.ref == ObjectRef("EgressGateway", "team", "other")
    assert conditions(result, ObjectRef("EgressGateway", "default", "gw"))["Programmed"] == ("False", "NotSelected")


def test_unknown_gateway_name_is_a_problem() -> None:
    result = compile_yaml(GATEWAY, gateway="nope")
    assert result.snapshot is None
    [problem] = result.problems
    assert problem.path == "--gateway" and 'EgressGateway "nope" not found' in problem.message


def test_no_gateway_is_a_problem() -> None:
    result = compile_yaml("", with_ca=True)
    assert result.snapshot is None
    assert [p.message for p in result.problems] == ["the configuration has no EgressGateway"]


# --- listeners -----------------------------------------------------------------------------------------------


def test_listeners_in_spec_order_with_precedence_and_interception() -> None:
    gw = compiled(GATEWAY).gateway
    assert [(l.name, l.protocol, l.tls_mode, l.intercepts, l.precedence) for l in gw.listeners] == [
        ("https", "HTTPS", "Terminate", True, 4),
        ("http", "HTTP", None, False, 3),
        ("pass", "TLS", "Passthrough", False, 2),
        ("tcp", "TCP", None, False, 1),
        ("udp", "UDP", None, False, 0),
    ]
    assert gw.listeners[0].ca is not None and gw.listeners[0].ca.cert_pem.startswith(b"-----BEGIN CERTIFICATE")
    assert b"PRIVATE KEY" in gw.listeners[0].ca.key_pem


def test_tls_terminate_and_http_terminate_listeners() -> None:
    text = GATEWAY.replace(
        "  - name: http\n    protocol: HTTP\n",
        "  - name: http\n    protocol: HTTP\n    tls: {mode: Terminate, caCertRef: {name: egress-ca}}\n"
        "  - name: tlsterm\n    protocol: TLS\n    tls: {mode: Terminate, caCertRef: {name: egress-ca}}\n",
    )
    gw = compiled(text).gateway
    http, tlsterm = gw.listener("http"), gw.listener("tlsterm")
    assert http is not None and http.intercepts and http.precedence == 4 and http.ca is not None
    assert tlsterm is not None and tlsterm.intercepts and tlsterm.precedence == 5


def test_ca_secret_with_ca_crt_keys_is_accepted() -> None:
    cert, key = create_ca("alt")
    secret = secret_manifest("egress-ca", cert, key).replace("tls.crt", "ca.crt").replace("tls.key", "ca.key")
    loaded = load_text(secret + "---\n" + GATEWAY, FILE)
    result = compile_config(loaded.resources)
    assert result.ok and result.snapshot is not None
    ca = result.snapshot.gateway.listeners[0].ca
    assert ca is not None and ca.cert_pem == cert


def test_ca_key_not_matching_the_certificate_is_a_problem() -> None:
    cert, _ = create_ca("one")
    _, other_key = create_ca("two")
    loaded = load_text(secret_manifest("egress-ca", cert, other_key) + "---\n" + GATEWAY, FILE)
    result = compile_config(loaded.resources)
    [problem] = result.problems
    assert problem.path == "spec.listeners[0].tls.caCertRef.name"
    assert "tls.key is not the key of tls.crt" in problem.message


# --- dangling references: each class, at its exact file:line:path ----------------------------------------------


def single_problem(text: str, with_ca: bool = True) -> str:
    result = compile_yaml(text, with_ca=with_ca)
    assert len(result.problems) == 1, [str(p) for p in result.problems]
    return str(result.problems[0])


def test_missing_backend_ref() -> None:
    text = GATEWAY + doc(
        HTTP_ROUTE,
        """\
        metadata: {name: r}
        spec:
          parentRefs: [{name: gw}]
          rules:
          - backendRefs:
            - {kind: Backend, name: nope}
        """,
    )
    assert single_problem(text) == (
        f'{FILE}:{line_of(text, "name: nope")}: HTTPRoute/default/r: '
        'spec.rules[0].backendRefs[0].name: Backend "default/nope" not found'
    )


def test_missing_parent_gateway() -> None:
    text = GATEWAY + doc(
        HTTP_ROUTE,
        """\
        metadata: {name: r}
        spec:
          parentRefs:
          - name: ghost
        """,
    )
    assert single_problem(text) == (
        f'{FILE}:{line_of(text, "name: ghost")}: HTTPRoute/default/r: '
        'spec.parentRefs[0].name: EgressGateway "default/ghost" not found'
    )


def test_missing_listener_section_name() -> None:
    text = GATEWAY + doc(
        HTTP_ROUTE,
        """\
        metadata: {name: r}
        spec:
          parentRefs:
          - name: gw
            sectionName: nosuch
        """,
    )
    assert single_problem(text) == (
        f'{FILE}:{line_of(text, "sectionName: nosuch")}: HTTPRoute/default/r: '
        'spec.parentRefs[0].sectionName: EgressGateway "default/gw" has no listener "nosuch"'
    )


def test_incompatible_section_name_is_a_problem_and_not_allowed_by_listeners() -> None:
    text = GATEWAY + doc(
        HTTP_ROUTE,
        """\
        metadata: {name: r}
        spec:
          parentRefs:
          - name: gw
            sectionName: tcp
        """,
    )
    result = compile_yaml(text)
    [problem] = result.problems
    assert problem.path == "spec.parentRefs[0].sectionName"
    assert problem.line == line_of(text, "sectionName: tcp")
    assert 'listener "tcp" is TCP' in problem.message
    assert conditions(result, ObjectRef("HTTPRoute", "default", "r"))["Accepted"] == ("False", "NotAllowedByListeners")


def test_missing_ca_cert_secret() -> None:
    problem = single_problem(GATEWAY, with_ca=False)
    line = line_of(GATEWAY, "caCertRef", with_ca=False)
    assert problem == (
        f'{FILE}:{line}: EgressGateway/default/gw: spec.listeners[0].tls.caCertRef.name: '
        'Secret "default/egress-ca" not found'
    )


def test_missing_trust_bundle_secret() -> None:
    text = GATEWAY + "  upstreamTLS:\n    additionalTrustBundleSecretRef: {name: bundle}\n"
    assert single_problem(text) == (
        f'{FILE}:{line_of(text, "additionalTrustBundleSecretRef")}: EgressGateway/default/gw: '
        'spec.upstreamTLS.additionalTrustBundleSecretRef.name: Secret "default/bundle" not found'
    )


def test_missing_gateway_parent_backend() -> None:
    text = GATEWAY + "  parentRef: {name: corp-proxy}\n"
    assert single_problem(text) == (
        f'{FILE}:{line_of(text, "corp-proxy")}: EgressGateway/default/gw: '
        'spec.parentRef.name: Backend "default/corp-proxy" not found'
    )


def test_missing_ai_auth_token_secret() -> None:
    text = GATEWAY + doc(
        BACKEND,
        """\
        metadata: {name: llm}
        spec:
          type: AI
          ai:
            llm:
              openai:
                model: gpt-4o
                authToken:
                  kind: SecretRef
                  secretRef: {name: openai-key}
        """,
    )
    assert single_problem(text) == (
        f'{FILE}:{line_of(text, "openai-key")}: Backend/default/llm: '
        'spec.ai.llm.openai.authToken.secretRef.name: Secret "default/openai-key" not found'
    )


def test_ai_auth_secret_needs_an_authorization_key_unless_it_has_exactly_one() -> None:
    backend = GATEWAY + doc(
        BACKEND,
        """\
        metadata: {name: llm}
        spec:
          type: AI
          ai: {llm: {openai: {model: m, authToken: {kind: SecretRef, secretRef: {name: key}}}}}
        """,
    )
    one_key = backend + doc(SECRET, "metadata: {name: key}\nstringData: {api-key: sk-1}\n")
    assert compile_yaml(one_key).problems == []
    two_keys = backend + doc(SECRET, "metadata: {name: key}\nstringData: {a: sk-1, b: sk-2}\n")
    assert single_problem(two_keys).endswith(
        "spec.ai.llm.openai.authToken.secretRef.name: Secret \"default/key\" has no key 'Authorization'"
    )


def test_missing_parent_auth_secret() -> None:
    text = GATEWAY + doc(
        BACKEND,
        """\
        metadata: {name: corp}
        spec:
          type: Static
          static: {hosts: [{host: proxy.corp, port: 3128}]}
          parent:
            authSecretRef: {name: corp-creds}
        """,
    )
    assert single_problem(text) == (
        f'{FILE}:{line_of(text, "corp-creds")}: Backend/default/corp: '
        'spec.parent.authSecretRef.name: Secret "default/corp-creds" not found'
    )


def test_missing_credential_injection_secret_and_key() -> None:
    text = GATEWAY + doc(
        APOXY + "kind: CredentialInjectionPolicy\n",
        """\
        metadata: {name: cred}
        spec:
          parentRefs: [{name: gw}]
          secretRef: {name: api-key}
          target: Header
          headerName: authorization
        """,
    )
    assert single_problem(text) == (
        f'{FILE}:{line_of(text, "api-key")}: CredentialInjectionPolicy/default/cred: '
        'spec.secretRef.name: Secret "default/api-key" not found'
    )
    with_secret = text + doc(SECRET, "metadata: {name: api-key}\nstringData: {other: x}\n")
    assert single_problem(with_secret).endswith("spec.secretRef.name: Secret \"default/api-key\" has no key 'token'")


def test_missing_basic_auth_secret() -> None:
    text = GATEWAY + doc(
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: HTTPListenerPolicy\n",
        """\
        metadata: {name: auth}
        spec:
          targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: gw}]
          basicAuth:
            credentialsSecretRef: {name: htpasswd}
        """,
    )
    assert single_problem(text) == (
        f'{FILE}:{line_of(text, "name: htpasswd")}: HTTPListenerPolicy/default/auth: '
        'spec.basicAuth.credentialsSecretRef.name: Secret "default/htpasswd" not found'
    )


def test_missing_policy_target_ref() -> None:
    text = GATEWAY + doc(
        APOXY + "kind: RateLimitPolicy\n",
        """\
        metadata: {name: rl}
        spec:
          requests: 10
          window: 1m
          targetRefs:
          - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: ghost-route}
        """,
    )
    result = compile_yaml(text)
    assert [str(p) for p in result.problems] == [
        f'{FILE}:{line_of(text, "ghost-route")}: RateLimitPolicy/default/rl: '
        'spec.targetRefs[0].name: HTTPRoute "default/ghost-route" not found'
    ]
    assert conditions(result, ObjectRef("RateLimitPolicy", "default", "rl"))["Accepted"] == ("False", "TargetNotFound")


def test_missing_deny_policy_target_ref() -> None:
    text = GATEWAY + doc(
        APOXY + "kind: EgressDenyPolicy\n",
        """\
        metadata: {name: deny}
        spec:
          targetRef:
            group: gateway.networking.k8s.io
            kind: HTTPRoute
            name: ghost
        """,
    )
    assert single_problem(text) == (
        f'{FILE}:{line_of(text, "name: ghost")}: EgressDenyPolicy/default/deny: '
        'spec.targetRef.name: HTTPRoute "default/ghost" not found'
    )


def test_policy_target_of_a_kind_it_cannot_attach_to() -> None:
    text = GATEWAY + doc(
        APOXY + "kind: EgressDenyPolicy\n",
        """\
        metadata: {name: deny}
        spec:
          targetRef: {group: clrk.apoxy.dev, kind: EgressGateway, name: gw}
        """,
    )
    problem = single_problem(text)
    assert "spec.targetRef.kind: a EgressDenyPolicy cannot target a EgressGateway" in problem


def test_missing_extension_ref() -> None:
    text = GATEWAY + doc(
        HTTP_ROUTE,
        """\
        metadata: {name: r}
        spec:
          parentRefs: [{name: gw}]
          rules:
          - filters:
            - type: ExtensionRef
              extensionRef: {group: gateway.kgateway.dev, kind: DirectResponse, name: teapot}
        """,
    )
    assert single_problem(text) == (
        f'{FILE}:{line_of(text, "teapot")}: HTTPRoute/default/r: '
        'spec.rules[0].filters[0].extensionRef.name: DirectResponse "default/teapot" not found'
    )


def test_all_problems_are_reported_at_once() -> None:
    text = GATEWAY + doc(
        HTTP_ROUTE,
        """\
        metadata: {name: r}
        spec:
          parentRefs: [{name: gw}, {name: ghost}]
          rules:
          - backendRefs: [{kind: Backend, name: a}, {kind: Backend, name: b}]
        """,
    )
    paths = sorted(p.path for p in compile_yaml(text).problems)
    assert paths == ["spec.parentRefs[1].name", "spec.rules[0].backendRefs[0].name", "spec.rules[0].backendRefs[1].name"]


# --- route attachment -----------------------------------------------------------------------------------------


def routes_of(snapshot: Snapshot, listener: str) -> dict[str, list[str]]:
    found = snapshot.gateway.listener(listener)
    assert found is not None
    return {
        "http": [r.name for r in found.http_routes.routes],
        "tls": [r.name for r in found.tls_routes.routes],
        "l4": [r.name for r in found.l4_routes.routes],
    }


ALL_ROUTE_KINDS = (
    doc(HTTP_ROUTE, "metadata: {name: h}\nspec: {parentRefs: [{name: gw}]}\n")
    + doc(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\n",
        "metadata: {name: g}\nspec: {parentRefs: [{name: gw}]}\n",
    )
    + doc(TLS_ROUTE, "metadata: {name: t}\nspec: {parentRefs: [{name: gw}], hostnames: [pinned.example.com]}\n")
    + doc(TCP_ROUTE, "metadata: {name: c}\nspec: {parentRefs: [{name: gw}]}\n")
    + doc(UDP_ROUTE, "metadata: {name: u}\nspec: {parentRefs: [{name: gw}]}\n")
    + doc(L4_ROUTE, "metadata: {name: l}\nspec: {parentRefs: [{name: gw}], rules: [{}]}\n")
)


def test_parent_ref_without_section_name_attaches_to_every_compatible_listener() -> None:
    snap = compiled(GATEWAY + ALL_ROUTE_KINDS)
    assert routes_of(snap, "https") == {"http": ["default/g", "default/h"], "tls": [], "l4": []}
    assert routes_of(snap, "http") == {"http": ["default/g", "default/h"], "tls": [], "l4": []}
    assert routes_of(snap, "pass") == {"http": [], "tls": ["default/t"], "l4": []}
    assert routes_of(snap, "tcp") == {"http": [], "tls": [], "l4": ["default/c", "default/l"]}
    assert routes_of(snap, "udp") == {"http": [], "tls": [], "l4": ["default/l", "default/u"]}
    assert snap.routes[ObjectRef("HTTPRoute", "default", "h")].listeners == ("https", "http")


def test_section_name_attaches_to_that_listener_only() -> None:
    text = GATEWAY + doc(HTTP_ROUTE, "metadata: {name: h}\nspec: {parentRefs: [{name: gw, sectionName: http}]}\n")
    snap = compiled(text)
    assert routes_of(snap, "http")["http"] == ["default/h"]
    assert routes_of(snap, "https")["http"] == []


def test_parent_ref_port_selects_listeners() -> None:
    text = GATEWAY + doc(UDP_ROUTE, "metadata: {name: u}\nspec: {parentRefs: [{name: gw, port: 53}]}\n")
    assert routes_of(compiled(text), "udp")["l4"] == ["default/u"]
    bad = GATEWAY + doc(UDP_ROUTE, "metadata: {name: u}\nspec: {parentRefs: [{name: gw, port: 5353}]}\n")
    assert [p.path for p in compile_yaml(bad).problems] == ["spec.parentRefs[0].port"]


def test_route_kind_without_compatible_listener_is_a_problem() -> None:
    gateway = GATEWAY.replace("  - name: pass\n    protocol: TLS\n    tls: {mode: Passthrough}\n", "")
    text = gateway + doc(TLS_ROUTE, "metadata: {name: t}\nspec: {parentRefs: [{name: gw}]}\n")
    result = compile_yaml(text)
    assert [p.path for p in result.problems] == ["spec.parentRefs[0]"]
    assert "TLS Passthrough" in result.problems[0].message


def test_allowed_routes_namespaces_same_refuses_other_namespaces_as_status_only() -> None:
    text = GATEWAY + doc(HTTP_ROUTE, "metadata: {name: h, namespace: team}\nspec: {parentRefs: [{name: gw, namespace: default}]}\n")
    result = compile_yaml(text)
    assert result.problems == []
    ref = ObjectRef("HTTPRoute", "team", "h")
    assert conditions(result, ref)["Accepted"] == ("False", "NotAllowedByListeners")
    assert conditions(result, ref)["Programmed"][0] == "False"
    assert result.snapshot is not None and ref not in result.snapshot.routes


def test_allowed_routes_all_and_selector_on_namespace_name() -> None:
    gateway = GATEWAY.replace(
        "  - name: http\n    protocol: HTTP\n",
        "  - name: http\n    protocol: HTTP\n    allowedRoutes:\n      namespaces:\n        from: Selector\n"
        "        selector: {matchLabels: {kubernetes.io/metadata.name: team}}\n",
    ).replace(
        "    tls: {mode: Terminate, caCertRef: {name: egress-ca}}\n",
        "    tls: {mode: Terminate, caCertRef: {name: egress-ca}}\n    allowedRoutes: {namespaces: {from: All}}\n",
        1,
    )
    team = doc(HTTP_ROUTE, "metadata: {name: h, namespace: team}\nspec: {parentRefs: [{name: gw, namespace: default}]}\n")
    other = doc(HTTP_ROUTE, "metadata: {name: o, namespace: other}\nspec: {parentRefs: [{name: gw, namespace: default}]}\n")
    snap = compiled(gateway + team + other)
    assert snap.routes[ObjectRef("HTTPRoute", "team", "h")].listeners == ("https", "http")
    assert snap.routes[ObjectRef("HTTPRoute", "other", "o")].listeners == ("https",)


def test_allowed_routes_kinds() -> None:
    gateway = GATEWAY.replace(
        "  - name: http\n    protocol: HTTP\n",
        "  - name: http\n    protocol: HTTP\n    allowedRoutes: {kinds: [{kind: GRPCRoute}]}\n",
    )
    text = gateway + doc(HTTP_ROUTE, "metadata: {name: h}\nspec: {parentRefs: [{name: gw, sectionName: http}]}\n")
    result = compile_yaml(text)
    assert result.problems == []
    assert conditions(result, ObjectRef("HTTPRoute", "default", "h"))["Accepted"] == ("False", "NotAllowedByListeners")


def test_route_attached_to_another_gateway_is_not_served_and_not_a_problem() -> None:
    text = two_gateways() + doc(HTTP_ROUTE, "metadata: {name: h, namespace: team}\nspec: {parentRefs: [{name: other}]}\n")
    result = compile_yaml(text, gateway="default/gw")
    assert result.problems == []
    assert result.snapshot is not None and result.snapshot.routes == {}
    assert conditions(result, ObjectRef("HTTPRoute", "team", "h"))["Accepted"] == ("False", "NoMatchingParent")


def test_route_hostnames_are_canonical_with_wildcards_kept() -> None:
    text = GATEWAY + doc(
        HTTP_ROUTE,
        "metadata: {name: h}\nspec: {parentRefs: [{name: gw}], hostnames: ['*.example.com', api.openai.com, xn--bcher-kva.example]}\n",
    )
    route = compiled(text).routes[ObjectRef("HTTPRoute", "default", "h")]
    assert route.hostnames == ("*.example.com", "api.openai.com", "xn--bcher-kva.example")


# --- rules ----------------------------------------------------------------------------------------------------


def test_rule_compilation() -> None:
    text = GATEWAY + doc(
        BACKEND, "metadata: {name: origin}\nspec: {type: Static, static: {hosts: [{host: Origin.Example., port: 8443}]}}\n"
    ) + doc(DIRECT, "metadata: {name: teapot}\nspec: {status: 418, body: short and stout}\n") + doc(
        HTTP_ROUTE,
        """\
        metadata: {name: h}
        spec:
          parentRefs: [{name: gw}]
          rules:
          - matches:
            - path: {type: PathPrefix, value: /v1/}
              method: POST
              headers: [{name: X-Team, value: a}, {name: x-id, type: RegularExpression, value: "[0-9]+"}]
              queryParams: [{name: Key, value: v}]
            filters:
            - type: RequestHeaderModifier
              requestHeaderModifier: {set: [{name: x-a, value: "1"}], add: [{name: x-b, value: "2"}], remove: [x-c]}
            - type: URLRewrite
              urlRewrite: {hostname: up.example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
            backendRefs:
            - {group: gateway.kgateway.dev, kind: Backend, name: origin, weight: 3}
            - {kind: Service, name: svc, namespace: apps, port: 8080}
            timeouts: {request: 30s}
          - filters:
            - type: ExtensionRef
              extensionRef: {group: gateway.kgateway.dev, kind: DirectResponse, name: teapot}
        """,
    )
    route = compiled(text).routes[ObjectRef("HTTPRoute", "default", "h")]
    first, second = route.rules
    [m] = first.matches
    assert (m.path.type, m.path.value, m.method) == ("PathPrefix", "/v1", "POST")
    assert [(h.name, h.type) for h in m.headers] == [("x-team", "Exact"), ("x-id", "RegularExpression")]
    assert m.headers[1].regex is not None and m.headers[1].matches("42") and not m.headers[1].matches("4a")
    assert [q.name for q in m.query_params] == ["Key"]  # query parameter names stay case-sensitive
    assert first.filters.request_headers is not None and first.filters.request_headers.set == (("x-a", "1"),)
    assert first.filters.url_rewrite is not None and first.filters.url_rewrite.path is not None
    assert first.filters.url_rewrite.path.value == "/v2"
    backend, service = first.backends
    assert backend.backend is not None and backend.weight == 3
    assert backend.backend.static_hosts[0].host == "origin.example" and backend.backend.static_hosts[0].port == 8443
    assert service.backend is None and service.service_host == "svc.apps.svc.cluster.local" and service.port == 8080
    assert first.request_timeout == 30.0
    assert second.matches[0].path.value == "" and second.matches[0].path.type == "PathPrefix"
    assert second.direct_response is not None and (second.direct_response.status, second.direct_response.body) == (
        418,
        "short and stout",
    )


def test_direct_response_status_code_spelling() -> None:
    text = GATEWAY + doc(DIRECT, "metadata: {name: d}\nspec: {statusCode: 503}\n")
    snap = compiled(text)
    assert snap.direct_responses[ObjectRef("DirectResponse", "default", "d")].status == 503


def test_egress_l4_route_matches() -> None:
    text = GATEWAY + doc(
        L4_ROUTE,
        """\
        metadata: {name: l}
        spec:
          parentRefs: [{name: gw, sectionName: tcp}]
          rules:
          - matches:
            - destinationCIDRs: [10.0.0.0/8, "2001:db8::/32"]
              destinationHostnames: [db.internal.example, "*.cache.example"]
              ports: [{port: 5432}, {startPort: 6000, endPort: 6010}]
              protocol: TCP
        """,
    )
    route = compiled(text).routes[ObjectRef("EgressL4Route", "default", "l")]
    [match] = route.rules[0].l4_matches
    assert match.cidrs == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    assert match.hostnames == ("db.internal.example", "*.cache.example")
    assert match.ports == ((5432, 5432), (6000, 6010))
    assert match.protocol == "TCP"


# --- backends and the gateway ---------------------------------------------------------------------------------


def test_parent_backend_with_credentials_and_gateway_parent_ref() -> None:
    text = GATEWAY + "  parentRef: {name: corp}\n" + doc(
        BACKEND,
        """\
        metadata: {name: corp, labels: {topology.kubernetes.io/region: eu-west-1}}
        spec:
          type: Static
          static: {hosts: [{host: proxy.corp.example, port: 3128}]}
          parent: {authSecretRef: {name: corp-creds}}
        """,
    ) + doc(SECRET, "metadata: {name: corp-creds}\nstringData: {username: alice, password: s3cr3t-parent}\n")
    snap = compiled(text)
    parent = snap.gateway.parent
    assert parent is not None and parent.parent is not None
    assert parent.region == "eu-west-1"
    assert (parent.parent.address, parent.parent.username, parent.parent.password) == (
        parent.static_hosts[0],
        "alice",
        "s3cr3t-parent",
    )
    assert "s3cr3t-parent" not in repr(parent)


def test_ai_backend_priority_groups() -> None:
    text = GATEWAY + doc(
        BACKEND,
        """\
        metadata: {name: llm}
        spec:
          type: AI
          ai:
            priorityGroups:
            - providers:
              - name: local
                openai:
                  model: llama3
                  hostOverride: {host: 127.0.0.1, port: 11434, scheme: http}
                  pathOverride: {fullPath: /v1/chat/completions}
            - providers:
              - name: claude
                anthropic:
                  model: claude-3-5-sonnet
                  apiVersion: "2023-06-01"
                  authToken: {kind: SecretRef, secretRef: {name: anthropic}}
        """,
    ) + doc(SECRET, "metadata: {name: anthropic}\nstringData: {Authorization: sk-ant-123456}\n")
    backend = compiled(text).backends[ObjectRef("Backend", "default", "llm")]
    (local,), (claude,) = backend.ai_groups
    assert (local.name, local.kind, local.model, local.host, local.port, local.scheme, local.path) == (
        "local",
        "openai",
        "llama3",
        "127.0.0.1",
        11434,
        "http",
        "/v1/chat/completions",
    )
    assert (claude.kind, claude.auth_kind, claude.auth_secret, claude.api_version) == (
        "anthropic",
        "SecretRef",
        ObjectRef("Secret", "default", "anthropic"),
        "2023-06-01",
    )


def test_gateway_fields() -> None:
    extra = (
        "  requestTimeout: 90s\n"
        "  dns: {lookupFamily: V6Only}\n"
        "  otlp:\n"
        "    endpoint: https://otel.example.com\n"
        "    headers: {authorization: Bearer otlp-token-xyz}\n"
        "    captureBody: {maxBytes: 1024, includeContentTypes: [application/json]}\n"
        "  upstreamTLS:\n"
        "    additionalTrustBundleSecretRef: {name: bundle}\n"
        "    hostAliases:\n"
        "    - {ip: 127.0.0.1, hostnames: [api.openai.com, API.Anthropic.com.]}\n"
        "    - {ip: '::1', hostnames: [api.openai.com]}\n"
        "  ssrfGuard: {allowCIDRs: [10.1.0.0/16], denyCIDRs: [192.0.2.0/24]}\n"
    )
    pem_a, pem_b = create_ca("bundle-a")[0], create_ca("bundle-b")[0]
    bundle = f"{{b.pem: {json.dumps(pem_b.decode())}, a.pem: {json.dumps(pem_a.decode())}, empty: ''}}"
    text = GATEWAY.replace("defaultPolicy: deny-all", "defaultPolicy: allow-all") + extra + doc(
        SECRET, f"metadata: {{name: bundle}}\nstringData: {bundle}\n"
    )
    gw = compiled(text).gateway
    assert (gw.default_policy, gw.request_timeout, gw.lookup_family) == ("allow-all", 90.0, "V6Only")
    assert (gw.capture_max_bytes, gw.capture_content_types) == (1024, ("application/json",))
    assert gw.otlp_endpoint == "https://otel.example.com"
    assert gw.otlp_headers.text("authorization") == "Bearer otlp-token-xyz"
    assert dict(gw.host_aliases) == {"api.openai.com": ("127.0.0.1", "::1"), "api.anthropic.com": ("127.0.0.1",)}
    assert gw.trust_bundle_pem == pem_a.strip() + b"\n" + pem_b.strip() + b"\n"
    assert gw.ssrf_allow == (ipaddress.ip_network("10.1.0.0/16"),)
    assert gw.ssrf_deny == (ipaddress.ip_network("192.0.2.0/24"),)


# --- policies -------------------------------------------------------------------------------------------------

GEO_DB = str(country_db({"127.0.0.0/8": ("EU", "DE")}))  # a RegionAllowListPolicy's database must open
POLICY_LAYERS = GATEWAY + doc(
    BACKEND, "metadata: {name: origin}\nspec: {type: Static, static: {hosts: [{host: origin.example, port: 443}]}}\n"
) + doc(
    HTTP_ROUTE,
    """\
    metadata: {name: h}
    spec:
      parentRefs: [{name: gw}]
      rules:
      - name: chat
        backendRefs: [{name: origin}]
        filters:
        - type: ExtensionRef
          extensionRef: {group: clrk.apoxy.dev, kind: LoggingPolicy, name: rule-logging}
    """,
) + doc(
    "apiVersion: policy.egressproxy.io/v1alpha1\nkind: RegionAllowListPolicy\n",
    """\
    metadata: {name: org}
    spec:
      targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: gw}]
      allowedRegions: [eu-*]
      unknownRegion: Deny
      geoIP: {databasePath: GEO_DB}
    """,
) + doc(
    "apiVersion: policy.egressproxy.io/v1alpha1\nkind: RegionAllowListPolicy\n",
    """\
    metadata: {name: per-backend}
    spec:
      targetRefs: [{group: gateway.kgateway.dev, kind: Backend, name: origin}]
      allowedRegions: [us-east-1]
    """,
) + doc(
    "apiVersion: policy.egressproxy.io/v1alpha1\nkind: RegionAllowListPolicy\n",
    """\
    metadata: {name: per-route}
    spec:
      targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: h}]
      allowedRegions: [ap-*]
      unknownRegion: Allow
    """,
) + doc(
    APOXY + "kind: LoggingPolicy\n",
    "metadata: {name: rule-logging}\nspec: {captureRequest: true, redactHeaders: [x-secret]}\n",
)
POLICY_LAYERS = POLICY_LAYERS.replace("{databasePath: GEO_DB}", "{databasePath: %s}" % GEO_DB)


def test_policy_precedence_route_over_backend_over_gateway() -> None:
    snap = compiled(POLICY_LAYERS)
    route = ObjectRef("HTTPRoute", "default", "h")
    backend = ObjectRef("Backend", "default", "origin")
    kind = "RegionAllowListPolicy"
    assert snap.policies.effective(kind)["allowedRegions"] == ["eu-*"]
    on_backend = snap.policies.effective(kind, backend=backend)
    assert on_backend == {
        "allowedRegions": ["us-east-1"],
        "unknownRegion": "Deny",
        "geoIP": {"databasePath": GEO_DB},
    }
    on_route = snap.policies.effective(kind, route=route, backend=backend)
    assert on_route == {"allowedRegions": ["ap-*"], "unknownRegion": "Allow", "geoIP": {"databasePath": GEO_DB}}
    assert [str(p.ref) for p in snap.policies.policies(kind, route=route, backend=backend)] == [
        "RegionAllowListPolicy/default/per-route",
        "RegionAllowListPolicy/default/per-backend",
        "RegionAllowListPolicy/default/org",
    ]


def test_extension_ref_attaches_a_policy_at_rule_scope() -> None:
    snap = compiled(POLICY_LAYERS)
    route = ObjectRef("HTTPRoute", "default", "h")
    assert snap.policies.effective("LoggingPolicy", route=route, rule=0)["redactHeaders"] == ["x-secret"]
    assert snap.policies.effective("LoggingPolicy", route=route) == {}
    assert snap.routes[route].rules[0].filters.policies == (ObjectRef("LoggingPolicy", "default", "rule-logging"),)


def test_policy_section_name_targets_a_listener_or_a_rule() -> None:
    text = POLICY_LAYERS + doc(
        APOXY + "kind: RateLimitPolicy\n",
        """\
        metadata: {name: per-rule}
        spec:
          requests: 5
          window: 1m
          targetRefs:
          - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: h, sectionName: chat}
          - {group: clrk.apoxy.dev, kind: EgressGateway, name: gw, sectionName: http}
        """,
    )
    snap = compiled(text)
    route = ObjectRef("HTTPRoute", "default", "h")
    assert snap.policies.effective("RateLimitPolicy", route=route, rule=0)["requests"] == 5
    assert snap.policies.effective("RateLimitPolicy", listener="http")["requests"] == 5
    assert snap.policies.effective("RateLimitPolicy", listener="https") == {}


def test_deny_policy_turns_the_route_into_a_denial() -> None:
    text = POLICY_LAYERS + doc(
        APOXY + "kind: EgressDenyPolicy\n",
        """\
        metadata: {name: block}
        spec:
          targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: h}
          denyResponse: {statusCode: 451, message: not here}
        """,
    )
    deny = compiled(text).routes[ObjectRef("HTTPRoute", "default", "h")].deny
    assert deny is not None
    assert (deny.policy, deny.status_code, deny.message) == (ObjectRef("EgressDenyPolicy", "default", "block"), 451, "not here")


# --- statuses -------------------------------------------------------------------------------------------------


def test_status_conditions_of_a_valid_configuration() -> None:
    text = POLICY_LAYERS + doc(
        APOXY + "kind: RateLimitPolicy\n", "metadata: {name: unattached}\nspec: {requests: 1, window: 1s}\n"
    )
    result = compile_yaml(text)
    assert result.ok
    assert conditions(result, ObjectRef("EgressGateway", "default", "gw")) == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
        "Programmed": ("True", "Programmed"),
    }
    assert conditions(result, ObjectRef("HTTPRoute", "default", "h")) == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
        "Programmed": ("True", "Programmed"),
    }
    assert conditions(result, ObjectRef("Backend", "default", "origin"))["Programmed"] == ("True", "Programmed")
    assert conditions(result, ObjectRef("LoggingPolicy", "default", "rule-logging"))["Accepted"] == ("True", "Accepted")
    assert conditions(result, ObjectRef("RateLimitPolicy", "default", "unattached"))["Accepted"] == ("False", "NoTarget")
    assert conditions(result, ObjectRef("RateLimitPolicy", "default", "unattached"))["Programmed"][0] == "False"
    assert [c.type for c in result.listener_statuses["https"]] == ["Accepted", "ResolvedRefs", "Programmed"]
    assert all(c.ok for c in result.listener_statuses["https"])
    assert result.snapshot is not None and result.snapshot.statuses == result.statuses


def test_statuses_when_a_reference_dangles() -> None:
    text = GATEWAY + doc(HTTP_ROUTE, "metadata: {name: r}\nspec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{kind: Backend, name: nope}]}]}\n")
    result = compile_yaml(text)
    assert not result.ok
    assert conditions(result, ObjectRef("HTTPRoute", "default", "r")) == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("False", "BackendNotFound"),
        "Programmed": ("False", "Invalid"),
    }
    assert conditions(result, ObjectRef("EgressGateway", "default", "gw"))["Programmed"] == ("False", "Invalid")


def test_condition_record() -> None:
    c = Condition("Accepted", "False", "NoTarget", "why")
    assert not c.ok and c.to_dump() == {"type": "Accepted", "status": "False", "reason": "NoTarget", "message": "why"}


# --- secrets dir ----------------------------------------------------------------------------------------------


def kubernetes_secret_volume(root: Path, name: str, data: dict[str, bytes]) -> None:
    """The layout the kubelet writes: keys are symlinks through `..data` into a timestamped folder."""
    folder = root / name
    stamp = folder / "..2024_01_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    for key, value in data.items():
        (stamp / key).write_bytes(value)
    os.symlink(stamp.name, folder / "..data")
    for key in data:
        os.symlink(f"..data/{key}", folder / key)


def test_read_secrets_dir_follows_the_kubelet_layout(tmp_path: Path) -> None:
    kubernetes_secret_volume(tmp_path, "openai", {"Authorization": b"Bearer sk-1\n", ".htpasswd": b"u:x"})
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "token").write_bytes(b"t0k")
    (tmp_path / "stray-file").write_bytes(b"ignored")
    (tmp_path / ".hidden").mkdir()
    mounted = read_secrets_dir(tmp_path)
    assert mounted.problems == ()
    assert sorted(mounted.secrets) == ["openai", "plain"]
    assert dict(mounted.secrets["openai"]) == {".htpasswd": b"u:x", "Authorization": b"Bearer sk-1\n"}
    assert mounted.secrets["openai"].text("Authorization") == "Bearer sk-1"
    assert dict(mounted.secrets["plain"]) == {"token": b"t0k"}


def test_missing_secrets_dir_is_a_problem(tmp_path: Path) -> None:
    [problem] = read_secrets_dir(tmp_path / "nope").problems
    assert problem.path == "--secrets-dir"


def test_secrets_dir_answers_references_from_any_namespace_and_wins(tmp_path: Path) -> None:
    cert, key = create_ca("mounted")
    kubernetes_secret_volume(tmp_path, "egress-ca", {"tls.crt": cert, "tls.key": key})
    loaded = load_text(ca_yaml() + "---\n" + GATEWAY, FILE)  # a v1 Secret of the same name exists too
    result = compile_config(loaded.resources, secrets_dir=str(tmp_path))
    assert result.ok and result.snapshot is not None
    ca = result.snapshot.gateway.listeners[0].ca
    assert ca is not None and ca.cert_pem == cert
    assert result.snapshot.secret("any-namespace", "egress-ca") is not None
    without_v1 = compile_config(load_text(GATEWAY, FILE).resources, mounted=read_secrets_dir(tmp_path))
    assert without_v1.ok


def test_snapshot_records_generation_and_files() -> None:
    snap = compiled(GATEWAY, generation=7)
    assert snap.generation == 7 and snap.files == (FILE,)
