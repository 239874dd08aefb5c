"""Gateway API's own validation rules on routes (DESIGN.md 4.2): what upstream's CRDs reject is rejected here.

Each rule (HTTPHeaderName, header values without CR or LF, `listType=map` names, "filter cannot be repeated",
HTTPPathMatch's CEL, the redirect and rewrite fields, the filter `type` agreeing with its one member) has one
case with the exact problem line, naming the element. Then documents modelled on Gateway API's
`hack/invalid-examples` (the upstream file named beside each), and valid documents that must still load.
"""

from __future__ import annotations

import pytest

from egressproxy.config.loader import load_text

HTTP = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ns}\nspec:\n"
GRPC = HTTP.replace("HTTPRoute", "GRPCRoute")


def problems_of(text: str) -> list[str]:
    return [str(p) for p in load_text(text, "t.yaml").problems]


def filter_body(*lines: str) -> str:
    """A rule whose `filters` list is `lines` (each already indented for the list)."""
    return "  rules:\n  - filters:\n" + "".join(f"{line}\n" for line in lines)


def match_body(*lines: str) -> str:
    return "  rules:\n  - matches:\n" + "".join(f"{line}\n" for line in lines)


RULES = [
    # 1. Header names and values; query parameter names.
    pytest.param(
        HTTP
        + filter_body(
            "    - type: RequestHeaderModifier",
            "      requestHeaderModifier:",
            "        set:",
            '        - {name: x-env, value: "prod\\r\\nInjected: yes"}',
        ),
        "t.yaml:10: HTTPRoute/ns/r: spec.rules[0].filters[0].requestHeaderModifier.set[0].value: "
        "must not contain CR or LF",
        id="set-value-header-injection",
    ),
    pytest.param(
        HTTP + match_body('    - headers: [{name: x-a, value: "a\\nb"}]'),
        "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].matches[0].headers[0].value: must not contain CR or LF",
        id="match-value-lf",
    ),
    pytest.param(
        HTTP
        + filter_body(
            "    - type: ResponseHeaderModifier",
            f'      responseHeaderModifier: {{add: [{{name: x-big, value: "{"v" * 4097}"}}]}}',
        ),
        "t.yaml:8: HTTPRoute/ns/r: spec.rules[0].filters[0].responseHeaderModifier.add[0].value: "
        "must be at most 4096 characters, got 4097",
        id="add-value-too-long",
    ),
    pytest.param(
        HTTP
        + filter_body(
            "    - type: RequestHeaderModifier",
            '      requestHeaderModifier: {set: [{name: ":authority", value: a}]}',
        ),
        "t.yaml:8: HTTPRoute/ns/r: spec.rules[0].filters[0].requestHeaderModifier.set[0].name: "
        "invalid name ':authority': must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)",
        id="set-name-pseudo-header",
    ),
    pytest.param(
        HTTP + match_body(f"    - headers: [{{name: {'h' * 257}, value: a}}]"),
        "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].matches[0].headers[0].name: "
        f"invalid name {'h' * 40!r}...: longer than 256 characters",
        id="match-name-too-long",
    ),
    pytest.param(
        HTTP
        + filter_body(
            "    - type: RequestHeaderModifier",
            '      requestHeaderModifier: {remove: ["x a"]}',
        ),
        "t.yaml:8: HTTPRoute/ns/r: spec.rules[0].filters[0].requestHeaderModifier.remove[0]: "
        "invalid name 'x a': must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)",
        id="remove-name-space",
    ),
    pytest.param(
        HTTP + match_body('    - queryParams: [{name: "a=b", value: "1"}]'),
        "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].matches[0].queryParams[0].name: "
        "invalid name 'a=b': must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)",
        id="query-name",
    ),
    # 2. No duplicate names (headers case-insensitively), no core filter twice, no redirect with a rewrite.
    pytest.param(
        HTTP + match_body("    - headers:", "      - {name: X-Tenant, value: a}", "      - {name: x-tenant, value: b}"),
        "t.yaml:9: HTTPRoute/ns/r: spec.rules[0].matches[0].headers[1].name: "
        "duplicate header name 'x-tenant' (also headers[0])",
        id="duplicate-header-match",
    ),
    pytest.param(
        HTTP + match_body("    - queryParams:", '      - {name: page, value: "1"}', '      - {name: page, value: "2"}'),
        "t.yaml:9: HTTPRoute/ns/r: spec.rules[0].matches[0].queryParams[1].name: "
        "duplicate query parameter name 'page' (also queryParams[0])",
        id="duplicate-query-match",
    ),
    pytest.param(
        HTTP
        + filter_body(
            "    - type: RequestHeaderModifier",
            '      requestHeaderModifier: {set: [{name: x-a, value: "1"}, {name: X-A, value: "2"}]}',
        ),
        "t.yaml:8: HTTPRoute/ns/r: spec.rules[0].filters[0].requestHeaderModifier.set[1].name: "
        "duplicate header name 'X-A' (also set[0])",
        id="duplicate-set",
    ),
    pytest.param(
        HTTP
        + filter_body(
            "    - type: ResponseHeaderModifier",
            '      responseHeaderModifier: {add: [{name: x-a, value: "1"}, {name: x-a, value: "2"}]}',
        ),
        "t.yaml:8: HTTPRoute/ns/r: spec.rules[0].filters[0].responseHeaderModifier.add[1].name: "
        "duplicate header name 'x-a' (also add[0])",
        id="duplicate-add",
    ),
    pytest.param(
        HTTP + filter_body("    - type: RequestHeaderModifier", "      requestHeaderModifier: {remove: [x-a, X-A]}"),
        "t.yaml:8: HTTPRoute/ns/r: spec.rules[0].filters[0].requestHeaderModifier.remove[1]: "
        "duplicate header name 'X-A' (also remove[0])",
        id="duplicate-remove",
    ),
    pytest.param(
        HTTP
        + filter_body(
            "    - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [a]}}",
            "    - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [b]}}",
        ),
        "t.yaml:8: HTTPRoute/ns/r: spec.rules[0].filters[1].type: "
        "RequestHeaderModifier filter cannot be repeated (also filters[0])",
        id="filter-repeated",
    ),
    pytest.param(
        HTTP + "  rules:\n  - backendRefs:\n    - name: svc\n      port: 80\n      filters:\n"
        "      - {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [a]}}\n"
        "      - {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [b]}}\n",
        "t.yaml:11: HTTPRoute/ns/r: spec.rules[0].backendRefs[0].filters[1].type: "
        "ResponseHeaderModifier filter cannot be repeated (also backendRefs[0].filters[0])",
        id="backend-filter-repeated",
    ),
    pytest.param(
        HTTP
        + filter_body(
            "    - {type: URLRewrite, urlRewrite: {hostname: a.example.com}}",
            "    - {type: RequestRedirect, requestRedirect: {scheme: https}}",
        ),
        "t.yaml:8: HTTPRoute/ns/r: spec.rules[0].filters[1].type: "
        "RequestRedirect and URLRewrite filters cannot be used together (also filters[0])",
        id="redirect-and-rewrite",
    ),
    # 3. Paths: HTTPPathMatch's CEL for Exact and PathPrefix; the same for a rewrite's or redirect's path.
    *[
        pytest.param(
            HTTP + match_body(f"    - path: {{type: {kind}, value: {value!r}}}"),
            f"t.yaml:7: HTTPRoute/ns/r: spec.rules[0].matches[0].path.value: {message}",
            id=f"path-{case}",
        )
        for case, kind, value, message in [
            ("relative", "Exact", "v1", "an Exact path must start with '/', got 'v1'"),
            ("double-slash", "PathPrefix", "/a//b", "a PathPrefix path must not contain '//', got '/a//b'"),
            ("dot-segment", "Exact", "/a/./b", "an Exact path must not contain '/./', got '/a/./b'"),
            (
                "dotdot-segment",
                "PathPrefix",
                "/public/../admin",
                "a PathPrefix path must not contain '/../', got '/public/../admin'",
            ),
            ("ends-dotdot", "PathPrefix", "/public/..", "a PathPrefix path must not end with '/..', got '/public/..'"),
            ("ends-dot", "Exact", "/public/.", "an Exact path must not end with '/.', got '/public/.'"),
            ("encoded-slash", "PathPrefix", "/a%2fb", "a PathPrefix path must not contain '%2f', got '/a%2fb'"),
            ("encoded-slash-upper", "PathPrefix", "/a%2Fb", "a PathPrefix path must not contain '%2F', got '/a%2Fb'"),
            ("fragment", "PathPrefix", "/a#frag", "a PathPrefix path must not contain '#', got '/a#frag'"),
            (
                "query",
                "Exact",
                "/a?b=1",
                "an Exact path must hold only path characters "
                "(letters, digits, -._~!$&'()*+,;=:@/ and %XX escapes), got '/a?b=1'",
            ),
            (
                "regex",
                "RegularExpression",
                "/a((",
                "invalid regular expression '/a((': missing ), unterminated subpattern at position 3",
            ),
        ]
    ],
    pytest.param(
        HTTP
        + filter_body(
            "    - type: URLRewrite",
            "      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /a/../b}}",
        ),
        "t.yaml:8: HTTPRoute/ns/r: spec.rules[0].filters[0].urlRewrite.path.replaceFullPath: "
        "a path must not contain '/../', got '/a/../b'",
        id="rewrite-full-path",
    ),
    pytest.param(
        HTTP + "  rules:\n  - matches: [{path: {type: PathPrefix, value: /old}}]\n    filters:\n"
        "    - type: RequestRedirect\n"
        '      requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: "/new#x"}}\n',
        "t.yaml:9: HTTPRoute/ns/r: spec.rules[0].filters[0].requestRedirect.path.replacePrefixMatch: "
        "a path must not contain '#', got '/new#x'",
        id="redirect-prefix-path",
    ),
    pytest.param(
        HTTP + "  rules:\n  - matches: [{path: {type: Exact, value: /old}}]\n    filters:\n"
        "    - type: URLRewrite\n      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}\n",
        "t.yaml:9: HTTPRoute/ns/r: spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch: "
        "replacePrefixMatch needs exactly one match, and its path a PathPrefix",
        id="replace-prefix-after-exact-match",
    ),
    pytest.param(
        HTTP
        + "  rules:\n  - matches:\n    - path: {type: PathPrefix, value: /a}\n    - path: {type: PathPrefix, value: /b}\n"
        "    backendRefs:\n    - name: svc\n      port: 80\n      filters:\n      - type: URLRewrite\n"
        "        urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}\n",
        "t.yaml:14: HTTPRoute/ns/r: spec.rules[0].backendRefs[0].filters[0].urlRewrite.path.replacePrefixMatch: "
        "replacePrefixMatch needs exactly one match, and its path a PathPrefix",
        id="replace-prefix-after-two-matches",
    ),
    # 4. Redirect fields.
    pytest.param(
        HTTP + filter_body("    - {type: RequestRedirect, requestRedirect: {statusCode: 300}}"),
        "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].filters[0].requestRedirect.statusCode: "
        "unsupported value 300: must be one of 301, 302, 303, 307, 308",
        id="redirect-status-code",
    ),
    pytest.param(
        HTTP + filter_body("    - {type: RequestRedirect, requestRedirect: {scheme: ftp}}"),
        "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].filters[0].requestRedirect.scheme: "
        "unsupported value 'ftp': must be one of http, https",
        id="redirect-scheme",
    ),
    pytest.param(
        HTTP + filter_body("    - {type: RequestRedirect, requestRedirect: {port: 0}}"),
        "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].filters[0].requestRedirect.port: must be at least 1, got 0",
        id="redirect-port",
    ),
    pytest.param(
        HTTP + filter_body('    - {type: RequestRedirect, requestRedirect: {hostname: "*.example.com"}}'),
        "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].filters[0].requestRedirect.hostname: "
        "invalid hostname '*.example.com': a wildcard is not allowed here",
        id="redirect-hostname-not-precise",
    ),
    # 5. Required fields, and the filter type agreeing with its member.
    pytest.param(
        HTTP + filter_body("    - type: ExtensionRef", "      extensionRef: {kind: RateLimitPolicy, name: a}"),
        "t.yaml:8: HTTPRoute/ns/r: spec.rules[0].filters[0].extensionRef.group: required field is missing",
        id="extension-ref-group",
    ),
    pytest.param(
        HTTP + filter_body("    - type: RequestHeaderModifier"),
        "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].filters[0].requestHeaderModifier: "
        "requestHeaderModifier is required when type is RequestHeaderModifier",
        id="filter-member-missing",
    ),
    # GRPCRoute: the same header rules, and GRPCMethodMatch's Exact patterns.
    pytest.param(
        GRPC + match_body("    - method: {service: helloworld.Greeter, method: Say/Hello}"),
        "t.yaml:7: GRPCRoute/ns/r: spec.rules[0].matches[0].method.method: "
        "invalid method 'Say/Hello': an Exact method must be an identifier",
        id="grpc-method",
    ),
    pytest.param(
        GRPC + match_body('    - headers: [{name: x-a, value: "1"}, {name: X-A, value: "2"}]'),
        "t.yaml:7: GRPCRoute/ns/r: spec.rules[0].matches[0].headers[1].name: "
        "duplicate header name 'X-A' (also headers[0])",
        id="grpc-duplicate-header",
    ),
    pytest.param(
        GRPC
        + filter_body(
            "    - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [a]}}",
            "    - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [b]}}",
        ),
        "t.yaml:8: GRPCRoute/ns/r: spec.rules[0].filters[1].type: "
        "RequestHeaderModifier filter cannot be repeated (also filters[0])",
        id="grpc-filter-repeated",
    ),
    pytest.param(
        GRPC
        + filter_body(
            "    - type: RequestHeaderModifier",
            '      requestHeaderModifier: {add: [{name: x-a, value: "a\\r\\nb: c"}]}',
        ),
        "t.yaml:8: GRPCRoute/ns/r: spec.rules[0].filters[0].requestHeaderModifier.add[0].value: "
        "must not contain CR or LF",
        id="grpc-header-injection",
    ),
]


@pytest.mark.parametrize(("text", "expected"), RULES)
def test_rule(text: str, expected: str) -> None:
    """Each upstream rule is one problem line naming the offending element."""
    assert "\n".join(problems_of(text)) == expected


# Documents modelled on Gateway API's hack/invalid-examples (the file each follows is its id), rewritten here.
UPSTREAM_INVALID = [
    pytest.param(
        HTTP
        + filter_body(
            "    - type: ResponseHeaderModifier",
            "      responseHeaderModifier:",
            "        add:",
            "        - name: X-Test-Header",
            '          value: "this\\nis\\rinvalid\\r\\nvalue"',
        ),
        "t.yaml:11: HTTPRoute/ns/r: spec.rules[0].filters[0].responseHeaderModifier.add[0].value: "
        "must not contain CR or LF",
        id="experimental/httproute/invalid-header-value.yaml",
    ),
    pytest.param(
        HTTP + match_body("    - path:", "        type: PathPrefix", "        value: /[]"),
        "t.yaml:9: HTTPRoute/ns/r: spec.rules[0].matches[0].path.value: a PathPrefix path must hold only path "
        "characters (letters, digits, -._~!$&'()*+,;=:@/ and %XX escapes), got '/[]'",
        id="standard/httproute/invalid-path-specialchars.yaml",
    ),
    pytest.param(
        HTTP + match_body("    - path:", "        type: PathPrefix", "        value: /my[/]path01"),
        "t.yaml:9: HTTPRoute/ns/r: spec.rules[0].matches[0].path.value: a PathPrefix path must hold only path "
        "characters (letters, digits, -._~!$&'()*+,;=:@/ and %XX escapes), got '/my[/]path01'",
        id="standard/httproute/invalid-path-alphanum-specialchars-mix.yaml",
    ),
    pytest.param(
        HTTP
        + filter_body(
            "    - type: RequestHeaderModifier",
            "      requestHeaderModifier:",
            "        remove:",
            "        - foo",
            "        - foo",
        ),
        "t.yaml:11: HTTPRoute/ns/r: spec.rules[0].filters[0].requestHeaderModifier.remove[1]: "
        "duplicate header name 'foo' (also remove[0])",
        id="standard/httproute/invalid-filter-duplicate-header.yaml",
    ),
    pytest.param(
        HTTP
        + filter_body(
            "    - type: RequestHeaderModifier",
            "      requestHeaderModifier: {set: [{name: special-header, value: foo}]}",
            "    - type: RequestHeaderModifier",
            "      requestHeaderModifier: {add: [{name: special-header, value: bar}]}",
        ),
        "t.yaml:9: HTTPRoute/ns/r: spec.rules[0].filters[1].type: "
        "RequestHeaderModifier filter cannot be repeated (also filters[0])",
        id="standard/httproute/invalid-filter-duplicate.yaml",
    ),
    pytest.param(
        HTTP + filter_body("    - type: RequestHeaderModifier"),
        "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].filters[0].requestHeaderModifier: "
        "requestHeaderModifier is required when type is RequestHeaderModifier",
        id="standard/httproute/invalid-filter-empty.yaml",
    ),
    pytest.param(
        HTTP
        + filter_body(
            "    - type: RequestHeaderModifier",
            "      requestMirror: {backendRef: {name: mirror, port: 8080}}",
        ),
        "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].filters[0].requestHeaderModifier: "
        "requestHeaderModifier is required when type is RequestHeaderModifier\n"
        "t.yaml:8: HTTPRoute/ns/r: spec.rules[0].filters[0].requestMirror: "
        "requestMirror must not be set when type is RequestHeaderModifier (it belongs to RequestMirror)",
        id="standard/httproute/invalid-filter-wrong-field.yaml",
    ),
    pytest.param(
        HTTP + match_body("    - headers:", "      - {name: magic, value: foo}", "      - {name: magic, value: bar}"),
        "t.yaml:9: HTTPRoute/ns/r: spec.rules[0].matches[0].headers[1].name: "
        "duplicate header name 'magic' (also headers[0])",
        id="standard/httproute/duplicate-header-match.yaml",
    ),
    pytest.param(
        HTTP
        + match_body("    - queryParams:", "      - {name: magic, value: foo}", "      - {name: magic, value: bar}"),
        "t.yaml:9: HTTPRoute/ns/r: spec.rules[0].matches[0].queryParams[1].name: "
        "duplicate query parameter name 'magic' (also queryParams[0])",
        id="standard/httproute/duplicate-query-match.yaml",
    ),
    pytest.param(
        HTTP + match_body("    - headers: [{name: magic/, value: foo}]"),
        "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].matches[0].headers[0].name: "
        "invalid name 'magic/': must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)",
        id="standard/httproute/invalid-header-name.yaml",
    ),
    pytest.param(
        HTTP + filter_body("    - {type: RequestRedirect, requestRedirect: {hostname: 'foo.example.com:8080'}}"),
        "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].filters[0].requestRedirect.hostname: invalid hostname "
        "'foo.example.com:8080': must be an RFC 1123 name (such as 'api.example.com')",
        id="standard/httproute/invalid-httpredirect-hostname.yaml",
    ),
    pytest.param(
        HTTP
        + filter_body("    - {type: RequestRedirect, requestRedirect: {scheme: https}}")
        + "    backendRefs: [{name: svc, port: 8080}]\n",
        "t.yaml:8: HTTPRoute/ns/r: spec.rules[0].backendRefs: a rule with a RequestRedirect filter must not have backendRefs",
        id="standard/httproute/invalid-request-redirect-with-backendref.yaml",
    ),
    pytest.param(
        GRPC + match_body("    - method: {service: ../}"),
        "t.yaml:7: GRPCRoute/ns/r: spec.rules[0].matches[0].method.service: "
        "invalid service '../': an Exact service must be a protobuf service name such as 'pkg.v1.Service'",
        id="v1alpha2/grpcroute/invalid-service.yaml",
    ),
    pytest.param(
        GRPC + match_body("    - method: {method: ../}"),
        "t.yaml:7: GRPCRoute/ns/r: spec.rules[0].matches[0].method.method: "
        "invalid method '../': an Exact method must be an identifier",
        id="v1alpha2/grpcroute/invalid-method.yaml",
    ),
    pytest.param(
        GRPC
        + filter_body(
            "    - type: RequestHeaderModifier",
            "      requestHeaderModifier:",
            "        set: [{name: x-a, value: a}, {name: x-a, value: b}]",
        ),
        "t.yaml:9: GRPCRoute/ns/r: spec.rules[0].filters[0].requestHeaderModifier.set[1].name: "
        "duplicate header name 'x-a' (also set[0])",
        id="v1alpha2/grpcroute/invalid-filter-duplicate-header.yaml",
    ),
]


@pytest.mark.parametrize(("text", "expected"), UPSTREAM_INVALID)
def test_upstream_invalid_examples_are_rejected(text: str, expected: str) -> None:
    """What Gateway API's own must-reject examples show is rejected, with the element named."""
    assert "\n".join(problems_of(text)) == expected


VALID = [
    pytest.param(
        HTTP + match_body("    - queryParams:", '      - {name: page, value: "1"}', '      - {name: Page, value: "2"}'),
        id="query-names-compare-exactly",
    ),
    pytest.param(
        HTTP
        + filter_body(
            "    - {type: RequestMirror, requestMirror: {backendRef: {name: m1, port: 80}}}",
            "    - {type: RequestMirror, requestMirror: {backendRef: {name: m2, port: 80}}}",
            "    - {type: ExtensionRef, extensionRef: {group: clrk.apoxy.dev, kind: RateLimitPolicy, name: a}}",
            "    - {type: ExtensionRef, extensionRef: {group: clrk.apoxy.dev, kind: LoggingPolicy, name: b}}",
        ),
        id="mirror-and-extension-ref-may-repeat",
    ),
    pytest.param(
        HTTP + filter_body("    - {type: ExtensionRef, extensionRef: {group: '', kind: ConfigMap, name: a}}"),
        id="extension-ref-core-group",
    ),
    pytest.param(
        HTTP + match_body("    - path: {type: RegularExpression, value: '//a/../#?'}"),
        id="regex-path-is-not-held-to-prefix-rules",
    ),
    pytest.param(
        HTTP
        + filter_body(
            "    - type: URLRewrite",
            "      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}",
        ),
        id="replace-prefix-with-the-default-match",
    ),
    pytest.param(
        HTTP
        + match_body(
            "    - path: {type: PathPrefix, value: \"/v1/models/gpt-4o:generate;x=1/~me/%20a/@b/$c/!d/'e'/(f)/*g+h,i=j&k\"}",
            "      headers:",
            '      - {name: "X-Tenant_ID.v1!#$%&\'*+^`|~", value: "Bearer a b\\tc"}',
        ),
        id="every-allowed-path-and-header-character",
    ),
    pytest.param(
        HTTP
        + filter_body(
            "    - type: RequestHeaderModifier",
            "      requestHeaderModifier:",
            '        set: [{name: x-a, value: "1"}]',
            '        add: [{name: x-a, value: "2"}]',
            "        remove: [x-b]",
            "    - type: ResponseHeaderModifier",
            "      responseHeaderModifier: {remove: [x-b]}",
            "    - {type: RequestRedirect, requestRedirect: {scheme: https, hostname: a.example.com, port: 8443, "
            "statusCode: 301, path: {type: ReplaceFullPath, replaceFullPath: /login}}}",
        ),
        id="same-name-in-set-and-add-and-both-modifiers",
    ),
    pytest.param(
        GRPC
        + match_body(
            "    - method: {service: .helloworld.v1.Greeter, method: SayHello}",
            "    - method: {type: RegularExpression, service: 'helloworld\\..*', method: 'Say.*'}",
        ),
        id="grpc-exact-and-regex-method-matches",
    ),
]


@pytest.mark.parametrize("text", VALID)
def test_valid_documents_still_load(text: str) -> None:
    """Documents upstream accepts (edges of each rule included) load without problems."""
    assert problems_of(text) == []


def test_duplicates_are_not_reported_at_shifted_indices_after_an_invalid_item() -> None:
    """An invalid list item is left out of the checked value, so a duplicate rule over it would name the wrong
    element (`remove[1]` for the third); such rules wait until the item is fixed."""
    text = HTTP + filter_body(
        "    - type: RequestHeaderModifier",
        "      requestHeaderModifier:",
        '        remove: ["a b", x, x]',
        '        set: [7, {name: y, value: "1"}, {name: y, value: "2"}]',
    )
    assert problems_of(text) == [
        "t.yaml:9: HTTPRoute/ns/r: spec.rules[0].filters[0].requestHeaderModifier.remove[0]: "
        "invalid name 'a b': must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)",
        "t.yaml:10: HTTPRoute/ns/r: spec.rules[0].filters[0].requestHeaderModifier.set[0]: "
        "expected an object, got integer",
    ]
    fixed = text.replace('"a b"', "z").replace("[7, ", "[")
    assert problems_of(fixed) == [
        "t.yaml:10: HTTPRoute/ns/r: spec.rules[0].filters[0].requestHeaderModifier.set[1].name: "
        "duplicate header name 'y' (also set[0])",
        "t.yaml:9: HTTPRoute/ns/r: spec.rules[0].filters[0].requestHeaderModifier.remove[2]: "
        "duplicate header name 'x' (also remove[1])",
    ]


def cors(body: str) -> str:
    return HTTP + filter_body("    - type: CORS", f"      cors: {body}")


CORS_AT = "t.yaml:8: HTTPRoute/ns/r: spec.rules[0].filters[0].cors."


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "{allowOrigins: ['https://a.example.com', '*']}",
            "allowOrigins: '*' cannot be listed alongside other origins",
        ),
        (
            "{allowOrigins: ['ftp://a.example.com']}",
            "allowOrigins[0]: invalid origin 'ftp://a.example.com': must be '*' or scheme://host[:port] "
            "(such as 'https://app.example.com')",
        ),
        (
            "{allowOrigins: ['https://a.example.com/path']}",
            "allowOrigins[0]: invalid origin 'https://a.example.com/path': must be '*' or scheme://host[:port] "
            "(such as 'https://app.example.com')",
        ),
        (
            "{allowOrigins: ['https://a.example.com', 'https://a.example.com']}",
            "allowOrigins[1]: duplicate origin 'https://a.example.com' (also allowOrigins[0])",
        ),
        ("{allowMethods: [GET, GET]}", "allowMethods[1]: duplicate method 'GET' (also allowMethods[0])"),
        ("{allowMethods: ['*', GET]}", "allowMethods: '*' cannot be listed alongside other methods"),
        (
            "{allowMethods: [get]}",
            "allowMethods[0]: unsupported value 'get': "
            "must be one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH, *",
        ),
        ("{allowHeaders: ['*', x-a]}", "allowHeaders: '*' cannot be listed alongside other headers"),
        (
            "{allowHeaders: ['x a']}",
            "allowHeaders[0]: invalid name 'x a': must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)",
        ),
        ("{exposeHeaders: [x-a, x-a]}", "exposeHeaders[1]: duplicate header name 'x-a' (also exposeHeaders[0])"),
        ("{maxAge: 0}", "maxAge: must be at least 1, got 0"),
    ],
)
def test_cors_rules(body: str, expected: str) -> None:
    """CORS lists are sets, `*` stands alone, origins are scheme://host[:port], maxAge is at least 1."""
    assert problems_of(cors(body)) == [CORS_AT + expected]


@pytest.mark.parametrize(
    "body",
    [
        "{allowOrigins: ['*'], allowMethods: ['*'], allowHeaders: ['*'], exposeHeaders: [X-Request-Id], maxAge: 86400}",
        "{allowOrigins: ['https://*.example.com:8443', 'http://*', 'http://localhost'], allowCredentials: true}",
    ],
)
def test_valid_cors(body: str) -> None:
    assert problems_of(cors(body)) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "  rules:\n  - name: Chat_V1\n",
            "t.yaml:6: HTTPRoute/ns/r: spec.rules[0].name: "
            "invalid name 'Chat_V1': lower-case letters, digits, '-' and '.' (such as 'chat-v1')",
        ),
        (
            "  rules:\n  - timeouts: {request: 1.5s}\n",
            "t.yaml:6: HTTPRoute/ns/r: spec.rules[0].timeouts.request: "
            "invalid duration '1.5s': up to four whole-number parts of h, m, s or ms, such as '1m30s'",
        ),
        (
            "  rules:\n  - retry: {backoff: 100us}\n",
            "t.yaml:6: HTTPRoute/ns/r: spec.rules[0].retry.backoff: "
            "invalid duration '100us': up to four whole-number parts of h, m, s or ms, such as '1m30s'",
        ),
    ],
)
def test_rule_names_and_durations(body: str, expected: str) -> None:
    """A rule's name is a SectionName; timeouts and backoff are Gateway API Durations (GEP-2257)."""
    assert problems_of(HTTP + body) == [expected]


def test_gateway_durations_that_hold() -> None:
    spec = load_text(
        HTTP + "  rules:\n  - name: chat.v1\n    timeouts: {request: 1h2m3s4ms, backendRequest: 0s}\n", "t.yaml"
    )
    assert [str(p) for p in spec.problems] == []
    assert spec.resources[0].spec["rules"][0]["timeouts"] == {"request": 3723.004, "backendRequest": 0.0}


def rules_with_matches(*counts: int) -> str:
    body = "  rules:\n"
    for count in counts:
        body += "  - matches:\n" + "".join(f"    - path: {{value: /p{i}}}\n" for i in range(count))
    return HTTP + body


def test_list_limits() -> None:
    """Upstream's maxItems: 16 hostnames, 64 matches per rule, 16 header (and query) matches per match; and at
    most 128 matches in a route."""
    hostnames = ", ".join(f"h{i}.example.com" for i in range(17))
    assert problems_of(HTTP + f"  hostnames: [{hostnames}]\n") == [
        "t.yaml:5: HTTPRoute/ns/r: spec.hostnames: must have at most 16 item(s)"
    ]
    assert problems_of(rules_with_matches(65)) == [
        "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].matches: must have at most 64 item(s)"
    ]
    headers = ", ".join(f"{{name: h{i}, value: v}}" for i in range(17))
    assert problems_of(HTTP + match_body(f"    - headers: [{headers}]")) == [
        "t.yaml:7: HTTPRoute/ns/r: spec.rules[0].matches[0].headers: must have at most 16 item(s)"
    ]
    assert problems_of(rules_with_matches(64, 64)) == []
    assert problems_of(rules_with_matches(64, 64, 1)) == [
        "t.yaml:5: HTTPRoute/ns/r: spec.rules: 129 matches in all: a route holds at most 128"
    ]


def test_grpc_route_holds_at_most_128_matches() -> None:
    body = "  rules:\n" + "  - matches:\n" + "".join(f"    - method: {{service: s{i}}}\n" for i in range(64))
    assert problems_of(GRPC + body + body[len("  rules:\n") :]) == []
    assert problems_of(GRPC + body + body[len("  rules:\n") :] + "  - matches: [{method: {method: M}}]\n") == [
        "t.yaml:5: GRPCRoute/ns/r: spec.rules: 129 matches in all: a route holds at most 128"
    ]


# --- Upstream's list limits and experimental fields (gateway-api config/crd at 4564255) --------------------------


def many(count: int, item: str) -> str:
    return "[" + ", ".join(item.format(i=i) for i in range(count)) + "]"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (f"  parentRefs: {many(33, '{{name: g{i}}}')}\n", "t.yaml:5: HTTPRoute/ns/r: spec.parentRefs: must have at most 32 item(s)"),
        ("  rules:\n" + "  - {}\n" * 17, "t.yaml:6: HTTPRoute/ns/r: spec.rules: must have at most 16 item(s)"),
        (
            f"  rules:\n  - backendRefs: {many(17, '{{name: b{i}, port: 80}}')}\n",
            "t.yaml:6: HTTPRoute/ns/r: spec.rules[0].backendRefs: must have at most 16 item(s)",
        ),
        (
            f"  rules:\n  - filters: {many(17, '{{type: ExtensionRef, extensionRef: {{group: g, kind: K, name: n{i}}}}}')}\n",
            "t.yaml:6: HTTPRoute/ns/r: spec.rules[0].filters: must have at most 16 item(s)",
        ),
    ],
    ids=["parentRefs", "rules", "backendRefs", "filters"],
)
def test_route_list_limits(body: str, expected: str) -> None:
    assert problems_of(HTTP + body) == [expected]
    assert problems_of(GRPC + body) == [expected.replace("HTTPRoute", "GRPCRoute")]


def test_the_limits_themselves_are_allowed() -> None:
    body = (
        f"  parentRefs: {many(32, '{{name: g{i}}}')}\n  rules:\n"
        + f"  - backendRefs: {many(16, '{{name: b{i}, port: 80}}')}\n"
        + "  - {}\n" * 15
    )
    assert problems_of(HTTP + body) == []


# Follows the experimental HTTPRoute CRD's HTTPExternalAuthFilter (GEP-1494).
EXTERNAL_AUTH_OK = """\
  rules:
  - filters:
    - type: ExternalAuth
      externalAuth:
        protocol: HTTP
        backendRef: {name: authz, port: 8080}
        http: {path: /check, allowedHeaders: [x-user]}
        forwardBody: {maxSize: 4096}
"""


def test_the_experimental_external_auth_filter_is_accepted() -> None:
    assert problems_of(HTTP + EXTERNAL_AUTH_OK) == []
    grpc = EXTERNAL_AUTH_OK.replace("protocol: HTTP", "protocol: GRPC").replace(
        "http: {path: /check, allowedHeaders: [x-user]}", "grpc: {allowedHeaders: [x-user]}"
    )
    assert problems_of(HTTP + grpc) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("protocol: HTTP", "protocol: GRPC", "spec.rules[0].filters[0].externalAuth.grpc: grpc is required when protocol is GRPC"),
        ("        http: {path: /check, allowedHeaders: [x-user]}\n", "", "spec.rules[0].filters[0].externalAuth.http: http is required when protocol is HTTP"),
        ("backendRef: {name: authz, port: 8080}", "backendRef: {name: authz, port: 8080, weight: 1}", "spec.rules[0].filters[0].externalAuth.backendRef.weight: unknown field"),
        ("type: ExternalAuth", "type: CORS", "spec.rules[0].filters[0].externalAuth: externalAuth must not be set when type is CORS"),
    ],
    ids=["grpc-block-missing", "http-block-missing", "no-weight", "type-disagrees"],
)
def test_external_auth_filter_rules(old: str, new: str, expected: str) -> None:
    problems = problems_of(HTTP + EXTERNAL_AUTH_OK.replace(old, new))
    assert any(expected in p for p in problems), problems


def test_grpc_routes_have_no_external_auth_filter() -> None:
    problems = problems_of(GRPC + EXTERNAL_AUTH_OK)
    assert problems and "unsupported value 'ExternalAuth'" in problems[0]


@pytest.mark.parametrize("value", ["All", "None"])
def test_use_default_gateways(value: str) -> None:
    assert problems_of(HTTP + f"  useDefaultGateways: {value}\n") == []
    assert problems_of(HTTP + "  useDefaultGateways: Some\n") == [
        "t.yaml:5: HTTPRoute/ns/r: spec.useDefaultGateways: unsupported value 'Some': must be one of All, None"
    ]
