"""Gateway API kinds: HTTPRoute, GRPCRoute, TLSRoute, TCPRoute, UDPRoute, BackendTLSPolicy."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from egressproxy.config.loader import load_text
from egressproxy.config.kinds.gatewayapi import hostname_error


def spec_of(text: str) -> dict[str, Any]:
    result = load_text(textwrap.dedent(text), "t.yaml")
    assert [str(p) for p in result.problems] == []
    assert len(result.resources) == 1
    return result.resources[0].spec


def problems_of(text: str) -> list[str]:
    return [str(p) for p in load_text(textwrap.dedent(text), "t.yaml").problems]


HTTP_ROUTE_EVERY_FIELD = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: everything
  namespace: apps
spec:
  parentRefs:
  - name: egress
    sectionName: https
    port: 443
  - {group: clrk.apoxy.dev, kind: EgressGateway, namespace: apps, name: other}
  hostnames: ["api.example.com", "*.example.org"]
  rules:
  - name: api
    matches:
    - path: {type: Exact, value: /v1/chat}
      headers:
      - {name: x-tenant, value: acme}
      - {type: RegularExpression, name: x-trace, value: "^[0-9a-f]+$"}
      queryParams:
      - {type: Exact, name: debug, value: "1"}
      method: POST
    - path: {type: RegularExpression, value: "^/v[12]/.*"}
    - headers: [{name: x-only, value: "yes"}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-env, value: prod}]
        add: [{name: x-added, value: "1"}]
        remove: [x-internal]
    - type: ResponseHeaderModifier
      responseHeaderModifier: {remove: [server]}
    - type: RequestMirror
      requestMirror:
        backendRef: {group: gateway.kgateway.dev, kind: Backend, name: mirror, port: 443}
        fraction: {numerator: 1, denominator: 10}
    - type: URLRewrite
      urlRewrite:
        hostname: upstream.example.com
        path: {type: ReplaceFullPath, replaceFullPath: /api}  # ReplacePrefixMatch needs one PathPrefix match
    - type: ExtensionRef
      extensionRef: {group: clrk.apoxy.dev, kind: RateLimitPolicy, name: per-agent}
    - type: CORS
      cors:
        allowOrigins: ["https://app.example.com"]
        allowCredentials: true
        allowMethods: [GET, POST]
        allowHeaders: [authorization]
        exposeHeaders: [x-request-id]
        maxAge: 600
    backendRefs:
    - group: gateway.kgateway.dev
      kind: Backend
      name: openai
      namespace: apps
      port: 443
      weight: 90
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-backend, value: openai}]}
    - {group: gateway.kgateway.dev, kind: Backend, name: anthropic, weight: 10}
    timeouts: {request: 5m, backendRequest: 90s}
    retry: {codes: [429, 503], attempts: 2, backoff: 250ms}
    sessionPersistence: {sessionName: s, type: Cookie, absoluteTimeout: 1h}
  - name: redirect
    matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        hostname: new.example.com
        path: {type: ReplaceFullPath, replaceFullPath: /new}
        port: 8443
        statusCode: 301
  - name: mirror-percent
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: mirror}, percent: 5}
"""


def test_http_route_with_every_field_loads_with_its_values() -> None:
    spec = spec_of(HTTP_ROUTE_EVERY_FIELD)
    assert spec["hostnames"] == ["api.example.com", "*.example.org"]
    api, redirect, mirror = spec["rules"]
    assert api["name"] == "api"
    first = api["matches"][0]
    assert first["path"] == {"type": "Exact", "value": "/v1/chat"}
    assert first["headers"][1] == {"type": "RegularExpression", "name": "x-trace", "value": "^[0-9a-f]+$"}
    assert first["queryParams"] == [{"type": "Exact", "name": "debug", "value": "1"}]
    assert first["method"] == "POST"
    assert [f["type"] for f in api["filters"]] == [
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestMirror",
        "URLRewrite",
        "ExtensionRef",
        "CORS",
    ]
    assert api["filters"][0]["requestHeaderModifier"]["remove"] == ["x-internal"]
    assert api["filters"][2]["requestMirror"]["fraction"] == {"numerator": 1, "denominator": 10}
    assert api["filters"][3]["urlRewrite"]["path"] == {"type": "ReplaceFullPath", "replaceFullPath": "/api"}
    assert api["filters"][5]["cors"]["maxAge"] == 600
    assert api["backendRefs"][0]["weight"] == 90
    assert api["backendRefs"][0]["filters"][0]["requestHeaderModifier"]["set"] == [{"name": "x-backend", "value": "openai"}]
    assert api["timeouts"] == {"request": 300.0, "backendRequest": 90.0}
    assert api["retry"] == {"codes": [429, 503], "attempts": 2, "backoff": 0.25}
    assert api["sessionPersistence"]["type"] == "Cookie"
    assert redirect["filters"][0]["requestRedirect"] == {
        "scheme": "https",
        "hostname": "new.example.com",
        "path": {"type": "ReplaceFullPath", "replaceFullPath": "/new"},
        "port": 8443,
        "statusCode": 301,
    }
    assert mirror["filters"][0]["requestMirror"]["percent"] == 5


def test_http_route_defaults() -> None:
    """parentRefs name the EgressGateway, a match without a path is PathPrefix "/", and so on."""
    spec = spec_of(HTTP_ROUTE_EVERY_FIELD)
    assert spec["parentRefs"][0] == {
        "name": "egress",
        "sectionName": "https",
        "port": 443,
        "kind": "EgressGateway",  # the group follows the kind (the compiler's parent_group_kind)
    }
    api, _, mirror = spec["rules"]
    assert api["matches"][2]["path"] == {"type": "PathPrefix", "value": "/"}
    assert api["matches"][0]["headers"][0]["type"] == "Exact"
    assert api["filters"][5]["cors"]["allowCredentials"] is True
    assert mirror["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]


def test_http_route_without_rules_has_the_catch_all_rule() -> None:
    spec = spec_of(
        """\
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: r}
        spec:
          parentRefs: [{name: egress}]
          hostnames: [httpbin.org]
        """
    )
    assert spec["rules"] == [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]


def test_redirect_status_code_defaults_to_302() -> None:
    spec = spec_of(
        """\
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: r}
        spec:
          rules:
          - filters:
            - type: RequestRedirect
              requestRedirect: {scheme: https}
        """
    )
    assert spec["rules"][0]["filters"][0]["requestRedirect"] == {"scheme": "https", "statusCode": 302}


ROUTE_HEAD = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: ns}
spec:
"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "  hostnames: [API.example.com]\n",
            "t.yaml:5: HTTPRoute/ns/r: spec.hostnames[0]: invalid hostname 'API.example.com': must be lower case ('api.example.com')",
        ),
        (
            "  hostnames: ['10.0.0.1']\n",
            "t.yaml:5: HTTPRoute/ns/r: spec.hostnames[0]: invalid hostname '10.0.0.1': an IP address is not a hostname",
        ),
        (
            "  hostnames: ['api.*.com']\n",
            "t.yaml:5: HTTPRoute/ns/r: spec.hostnames[0]: invalid hostname 'api.*.com': must be an RFC 1123 name "
            "or '*.' followed by one (such as 'api.example.com')",
        ),
        (
            "  hostnames: ['bücher.de']\n",
            "t.yaml:5: HTTPRoute/ns/r: spec.hostnames[0]: invalid hostname 'bücher.de': must be ASCII "
            "(write the IDNA form 'xn--bcher-kva.de')",
        ),
        (  # IDNA 2008 as clients send it, not Python's IDNA 2003 'strasse.de' (another name)
            "  hostnames: ['*.straße.de']\n",
            "t.yaml:5: HTTPRoute/ns/r: spec.hostnames[0]: invalid hostname '*.straße.de': must be ASCII "
            "(write the IDNA form '*.xn--strae-oqa.de')",
        ),
        (
            "  rules:\n  - matches:\n    - path: {type: RegularExpression, value: '^/v1/(chat'}\n",
            "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].matches[0].path.value: invalid regular expression '^/v1/(chat': "
            "missing ), unterminated subpattern at position 5",
        ),
        (
            "  rules:\n  - matches:\n    - headers:\n      - {type: RegularExpression, name: x, value: '[a-'}\n",
            "t.yaml:8: HTTPRoute/ns/r: spec.rules[0].matches[0].headers[0].value: invalid regular expression '[a-': "
            "unterminated character set at position 0",
        ),
        (
            "  rules:\n  - matches:\n    - path: {value: v1}\n",
            "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].matches[0].path.value: a PathPrefix path must start with '/', got 'v1'",
        ),
        (
            "  rules:\n  - matches:\n    - method: FETCH\n",
            "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].matches[0].method: unsupported value 'FETCH': "
            "must be one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH",
        ),
        (
            "  rules:\n  - filters:\n    - type: RequestHeaderModifier\n      responseHeaderModifier: {remove: [a]}\n",
            # Both halves of the disagreement are reported, each at its own line.
            "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].filters[0].requestHeaderModifier: "
            "requestHeaderModifier is required when type is RequestHeaderModifier\n"
            "t.yaml:8: HTTPRoute/ns/r: spec.rules[0].filters[0].responseHeaderModifier: "
            "responseHeaderModifier must not be set when type is RequestHeaderModifier (it belongs to ResponseHeaderModifier)",
        ),
        (
            "  rules:\n  - filters:\n    - type: RequestRedirect\n      requestRedirect: {statusCode: 304}\n",
            "t.yaml:8: HTTPRoute/ns/r: spec.rules[0].filters[0].requestRedirect.statusCode: "
            "unsupported value 304: must be one of 301, 302, 303, 307, 308",
        ),
        (
            "  rules:\n  - filters:\n    - type: RequestRedirect\n      requestRedirect: {scheme: https}\n"
            "    - type: URLRewrite\n      urlRewrite: {hostname: a.example.com}\n",
            "t.yaml:9: HTTPRoute/ns/r: spec.rules[0].filters[1].type: "
            "RequestRedirect and URLRewrite filters cannot be used together (also filters[0])",
        ),
        (
            "  rules:\n  - timeouts: {request: 10s, backendRequest: 1m}\n",
            "t.yaml:6: HTTPRoute/ns/r: spec.rules[0].timeouts.backendRequest: must not be longer than request",
        ),
        (
            "  rules:\n  - timeouts: {request: 10}\n",
            "t.yaml:6: HTTPRoute/ns/r: spec.rules[0].timeouts.request: expected a duration string such as '30s' or '1m30s', got integer",
        ),
        (
            "  rules:\n  - name: a\n  - name: a\n",
            "t.yaml:7: HTTPRoute/ns/r: spec.rules[1].name: duplicate rule name 'a' (also rules[0])",
        ),
        (
            "  rules:\n  - backendRef: [{name: x}]\n",
            "t.yaml:6: HTTPRoute/ns/r: spec.rules[0].backendRef: unknown field (did you mean 'backendRefs'?)",
        ),
        (
            "  parentRefs: [{sectionName: https}]\n",
            "t.yaml:5: HTTPRoute/ns/r: spec.parentRefs[0].name: required field is missing",
        ),
    ],
)
def test_http_route_problems(body: str, expected: str) -> None:
    assert "\n".join(problems_of(ROUTE_HEAD + body)) == expected


def test_http_route_is_served_as_v1_and_v1beta1_only() -> None:
    assert problems_of(ROUTE_HEAD.replace("/v1", "/v1beta1") + "  hostnames: [a.example.com]\n") == []
    assert problems_of(ROUTE_HEAD.replace("/v1", "/v1alpha2") + "  hostnames: [a.example.com]\n") == [
        "t.yaml:1: HTTPRoute/ns/r: apiVersion: HTTPRoute is served as gateway.networking.k8s.io/v1 or "
        "gateway.networking.k8s.io/v1beta1, not 'gateway.networking.k8s.io/v1alpha2'"
    ]


def test_grpc_route_with_every_field() -> None:
    spec = spec_of(
        """\
        apiVersion: gateway.networking.k8s.io/v1
        kind: GRPCRoute
        metadata: {name: grpc}
        spec:
          parentRefs: [{name: egress, sectionName: https}]
          hostnames: [grpc.example.com]
          rules:
          - name: say
            matches:
            - method: {service: helloworld.Greeter, method: SayHello}
              headers: [{name: x-tenant, value: acme}]
            - method: {type: RegularExpression, service: "helloworld\\\\..*"}
            filters:
            - type: RequestHeaderModifier
              requestHeaderModifier: {set: [{name: x-a, value: b}]}
            - type: ResponseHeaderModifier
              responseHeaderModifier: {add: [{name: x-c, value: d}]}
            - type: RequestMirror
              requestMirror: {backendRef: {name: shadow}}
            - type: ExtensionRef
              extensionRef: {group: clrk.apoxy.dev, kind: LoggingPolicy, name: audit}
            backendRefs:
            - name: greeter
              kind: Backend
              group: gateway.kgateway.dev
              filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [x-a]}}]
            sessionPersistence: {type: Header, sessionName: x-session}
        """
    )
    rule = spec["rules"][0]
    assert rule["matches"][0]["method"] == {"type": "Exact", "service": "helloworld.Greeter", "method": "SayHello"}
    assert rule["matches"][0]["headers"] == [{"type": "Exact", "name": "x-tenant", "value": "acme"}]
    assert rule["matches"][1]["method"]["service"] == "helloworld\\..*"
    assert [f["type"] for f in rule["filters"]] == [
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestMirror",
        "ExtensionRef",
    ]
    assert rule["backendRefs"][0]["filters"][0]["requestHeaderModifier"] == {"remove": ["x-a"]}
    assert spec["parentRefs"][0]["kind"] == "EgressGateway"


def test_grpc_method_match_needs_service_or_method() -> None:
    assert problems_of(
        """\
        apiVersion: gateway.networking.k8s.io/v1
        kind: GRPCRoute
        metadata: {name: grpc}
        spec:
          rules:
          - matches:
            - method: {type: Exact}
        """
    ) == ["t.yaml:7: GRPCRoute/default/grpc: spec.rules[0].matches[0].method: set service, method or both"]


def test_grpc_route_has_no_url_rewrite() -> None:
    assert problems_of(
        """\
        apiVersion: gateway.networking.k8s.io/v1
        kind: GRPCRoute
        metadata: {name: grpc}
        spec:
          rules:
          - filters:
            - type: URLRewrite
        """
    ) == [
        "t.yaml:7: GRPCRoute/default/grpc: spec.rules[0].filters[0].type: unsupported value 'URLRewrite': "
        "must be one of RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, ExtensionRef"
    ]


def test_tls_route_v1alpha2_with_and_without_backend_refs() -> None:
    version = "v1alpha2"
    spec = spec_of(
        f"""\
        apiVersion: gateway.networking.k8s.io/{version}
        kind: TLSRoute
        metadata: {{name: pypi}}
        spec:
          parentRefs: [{{name: egress, sectionName: tls-passthrough}}]
          hostnames: [pypi.org, files.pythonhosted.org]
          rules:
          - name: direct
          - name: via-backend
            backendRefs: [{{name: pypi-mirror, port: 443, weight: 1}}]
        """
    )
    assert spec["hostnames"] == ["pypi.org", "files.pythonhosted.org"]
    assert spec["rules"] == [{"name": "direct"}, {"name": "via-backend", "backendRefs": [{"name": "pypi-mirror", "port": 443, "weight": 1}]}]


@pytest.mark.parametrize(("kind", "version"), [("TLSRoute", "v1alpha3"), ("TLSRoute", "v1"), ("TCPRoute", "v1"), ("UDPRoute", "v1")])
def test_standard_l4_routes_hold_one_rule(kind: str, version: str) -> None:
    """gateway-api config/crd/standard: TLSRoute v1alpha3/v1 and TCPRoute/UDPRoute v1 take at most one rule."""
    text = f"""\
        apiVersion: gateway.networking.k8s.io/{version}
        kind: {kind}
        metadata: {{name: pypi}}
        spec:
          hostnames: [pypi.org]
          rules:
          - backendRefs: [{{name: pypi-mirror, port: 443}}]
        """
    if kind != "TLSRoute":
        text = text.replace("          hostnames: [pypi.org]\n", "")
    assert problems_of(text) == []
    two = text.rstrip(" ") + "          - name: second\n"
    assert problems_of(two) == [f"t.yaml:{7 if kind == 'TLSRoute' else 6}: {kind}/default/pypi: spec.rules: must have at most 1 item(s)"]


def test_tls_route_without_rules_has_one_empty_rule() -> None:
    spec = spec_of(
        """\
        apiVersion: gateway.networking.k8s.io/v1alpha2
        kind: TLSRoute
        metadata: {name: pypi}
        spec:
          hostnames: [pypi.org]
        """
    )
    assert spec["rules"] == [{}]
    assert "parentRefs" not in spec


@pytest.mark.parametrize("kind", ["TCPRoute", "UDPRoute"])
def test_tcp_and_udp_routes(kind: str) -> None:
    spec = spec_of(
        f"""\
        apiVersion: gateway.networking.k8s.io/v1alpha2
        kind: {kind}
        metadata: {{name: l4}}
        spec:
          parentRefs: [{{name: egress, sectionName: raw}}]
          rules:
          - name: db
            backendRefs: [{{name: postgres, port: 5432}}]
          - name: anywhere
        """
    )
    assert spec["rules"][0]["backendRefs"] == [{"name": "postgres", "port": 5432}]
    assert spec["rules"][1] == {"name": "anywhere"}


@pytest.mark.parametrize("kind", ["TCPRoute", "UDPRoute"])
def test_tcp_and_udp_routes_have_no_hostnames(kind: str) -> None:
    assert problems_of(
        f"""\
        apiVersion: gateway.networking.k8s.io/v1alpha2
        kind: {kind}
        metadata: {{name: l4}}
        spec:
          hostnames: [db.example.com]
        """
    ) == [f"t.yaml:5: {kind}/default/l4: spec.hostnames: unknown field"]


def test_tcp_route_version() -> None:
    assert problems_of(
        """\
        apiVersion: gateway.networking.k8s.io/v1beta1
        kind: TCPRoute
        metadata: {name: l4}
        spec: {}
        """
    ) == [
        "t.yaml:1: TCPRoute/default/l4: apiVersion: TCPRoute is served as gateway.networking.k8s.io/v1 or "
        "gateway.networking.k8s.io/v1alpha2, not 'gateway.networking.k8s.io/v1beta1'"
    ]


BACKEND_TLS_POLICY_EVERY_FIELD = """\
apiVersion: gateway.networking.k8s.io/{version}
kind: BackendTLSPolicy
metadata: {{name: api-tls}}
spec:
  targetRefs:
  - {{group: gateway.kgateway.dev, kind: Backend, name: api, sectionName: https}}
  validation:
    caCertificateRefs:
    - {{group: "", kind: Secret, name: api-ca}}
    hostname: api.example.com
    subjectAltNames:
    - {{type: Hostname, hostname: "*.example.com"}}
    - {{type: URI, uri: "spiffe://example.com/api"}}
    spkiPins: ["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]
    crlRefs: [{{name: api-crl}}]
  options: {{"tls.min-version": "1.3"}}
  clientCertificateRef: {{name: client-cert}}
"""


@pytest.mark.parametrize("version", ["v1alpha3", "v1"])
def test_backend_tls_policy_with_every_field(version: str) -> None:
    spec = spec_of(BACKEND_TLS_POLICY_EVERY_FIELD.format(version=version))
    assert spec["targetRefs"] == [{"group": "gateway.kgateway.dev", "kind": "Backend", "name": "api", "sectionName": "https"}]
    validation = spec["validation"]
    assert validation["caCertificateRefs"] == [{"group": "", "kind": "Secret", "name": "api-ca"}]
    assert validation["hostname"] == "api.example.com"
    assert validation["subjectAltNames"][1] == {"type": "URI", "uri": "spiffe://example.com/api"}
    assert validation["spkiPins"] == ["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]
    assert validation["crlRefs"] == [{"name": "api-crl"}]
    assert spec["options"] == {"tls.min-version": "1.3"}
    assert spec["clientCertificateRef"] == {"name": "client-cert"}


def test_backend_tls_policy_with_the_system_trust_store() -> None:
    spec = spec_of(
        """\
        apiVersion: gateway.networking.k8s.io/v1
        kind: BackendTLSPolicy
        metadata: {name: p}
        spec:
          targetRefs: [{kind: Backend, name: api}]
          validation: {wellKnownCACertificates: System, hostname: api.example.com}
        """
    )
    assert spec["validation"] == {"wellKnownCACertificates": "System", "hostname": "api.example.com"}


TLS_POLICY_HEAD = """\
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: p}
spec:
  targetRefs: [{kind: Backend, name: api}]
  validation:
    hostname: api.example.com
"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "",
            "t.yaml:7: BackendTLSPolicy/default/p: spec.validation.caCertificateRefs: "
            "set caCertificateRefs or wellKnownCACertificates",
        ),
        (
            "    wellKnownCACertificates: System\n    caCertificateRefs: [{name: ca}]\n",
            "t.yaml:8: BackendTLSPolicy/default/p: spec.validation.wellKnownCACertificates: "
            "set only one of caCertificateRefs and wellKnownCACertificates",
        ),
        (
            "    wellKnownCACertificates: Mozilla\n",
            "t.yaml:8: BackendTLSPolicy/default/p: spec.validation.wellKnownCACertificates: "
            "unsupported value 'Mozilla': must be one of System",
        ),
        (
            "    wellKnownCACertificates: System\n    spkiPins: [abc]\n",
            "t.yaml:9: BackendTLSPolicy/default/p: spec.validation.spkiPins[0]: "
            "invalid SPKI pin 'abc': must be the base64 SHA-256 of a SubjectPublicKeyInfo",
        ),
        (
            "    wellKnownCACertificates: System\n    spkiPins: [YWJj]\n",
            "t.yaml:9: BackendTLSPolicy/default/p: spec.validation.spkiPins[0]: "
            "invalid SPKI pin 'YWJj': a SHA-256 digest is 32 bytes, this is 3",
        ),
        (
            "    wellKnownCACertificates: System\n    subjectAltNames: [{type: URI, hostname: a.example.com}]\n",
            "t.yaml:9: BackendTLSPolicy/default/p: spec.validation.subjectAltNames[0].uri: uri is required when type is URI\n"
            "t.yaml:9: BackendTLSPolicy/default/p: spec.validation.subjectAltNames[0].hostname: "
            "hostname must not be set when type is URI (it belongs to Hostname)",
        ),
    ],
)
def test_backend_tls_policy_problems(body: str, expected: str) -> None:
    assert "\n".join(problems_of(TLS_POLICY_HEAD + body)) == expected


def test_backend_tls_policy_needs_target_refs() -> None:
    assert problems_of(
        """\
        apiVersion: gateway.networking.k8s.io/v1alpha3
        kind: BackendTLSPolicy
        metadata: {name: p}
        spec:
          validation: {wellKnownCACertificates: System, hostname: api.example.com}
        """
    ) == ["t.yaml:5: BackendTLSPolicy/default/p: spec.targetRefs: required field is missing"]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("api.example.com", True),
        ("*.example.com", True),
        ("a-b.c0", True),
        ("localhost", True),
        ("*", False),
        ("example.com.", False),
        ("-a.example.com", False),
        ("a_b.example.com", False),
        ("x" * 64 + ".com", False),
        ("::1", False),
        ("[::1]", False),
    ],
)
def test_hostname_validation(value: str, ok: bool) -> None:
    assert (hostname_error(value) is None) is ok
