"""BackendTLSPolicy `validation.caCertificateRefs` naming a ConfigMap (key `ca.crt`): the CA is compiled and
used exactly as a Secret's, and a ConfigMap that is missing, lacks the key or holds no certificate is a problem at
the referencing field (DESIGN.md 4.2)."""

from __future__ import annotations

import json
import textwrap

import pytest

from egressproxy.compiler import CompileResult, compile_config
from egressproxy.config.loader import load_text
from egressproxy.config.problems import ObjectRef
from tests.support.pki import TestCA

FILE = "cfg.yaml"
API = ObjectRef("Backend", "team", "api")


@pytest.fixture(scope="module")
def ca_pem() -> str:
    return TestCA("config map root").cert_pem.decode()


def config(ca_ref: str, trust: str) -> str:
    """A gateway, a Backend, its BackendTLSPolicy with caCertificateRefs `[ca_ref]`, and the `trust` documents."""
    return textwrap.dedent(
        f"""\
        apiVersion: clrk.apoxy.dev/v1alpha1
        kind: EgressGateway
        metadata: {{name: gw, namespace: team}}
        spec:
          listeners: [{{name: http, protocol: HTTP}}]
        ---
        apiVersion: gateway.kgateway.dev/v1alpha1
        kind: Backend
        metadata: {{name: api, namespace: team}}
        spec: {{type: Static, static: {{hosts: [{{host: api.internal, port: 443}}]}}}}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: BackendTLSPolicy
        metadata: {{name: api-tls, namespace: team}}
        spec:
          targetRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: api}}]
          validation:
            caCertificateRefs: [{ca_ref}]
            hostname: api.example.com
        ---
        """
    ) + textwrap.dedent(trust)


def config_map(data: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: api-ca, namespace: team}}\n{data}"


def compile_text(text: str) -> CompileResult:
    loaded = load_text(text, FILE)
    assert [str(p) for p in loaded.problems] == []
    return compile_config(loaded.resources)


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if needle in line)


CONFIG_MAP_REF = '{group: "", kind: ConfigMap, name: api-ca}'


def test_a_config_map_ca_is_compiled_like_a_secrets(ca_pem: str) -> None:
    from_config_map = compile_text(config(CONFIG_MAP_REF, config_map(f"data:\n  ca.crt: {json.dumps(ca_pem)}\n")))
    secret = f"apiVersion: v1\nkind: Secret\nmetadata: {{name: api-ca, namespace: team}}\nstringData:\n  ca.crt: {json.dumps(ca_pem)}\n"
    from_secret = compile_text(config("{name: api-ca}", secret))
    for result in (from_config_map, from_secret):
        assert [str(p) for p in result.problems] == []
        assert result.snapshot is not None
    assert from_config_map.snapshot is not None and from_secret.snapshot is not None
    mapped, secreted = from_config_map.snapshot.compiled.tls_for(API), from_secret.snapshot.compiled.tls_for(API)
    assert [c.subject.rfc4514_string() for c in mapped.ca_certificates] == ["CN=config map root"]
    assert mapped.params == secreted.params
    assert mapped.policy == ObjectRef("BackendTLSPolicy", "team", "api-tls")


def test_a_config_map_ca_may_sit_in_binary_data(ca_pem: str) -> None:
    import base64

    encoded = base64.b64encode(ca_pem.encode()).decode()
    result = compile_text(config(CONFIG_MAP_REF, config_map(f"binaryData:\n  ca.crt: {encoded}\n")))
    assert [str(p) for p in result.problems] == []
    assert result.snapshot is not None
    assert len(result.snapshot.compiled.tls_for(API).ca_certificates) == 1


PROBLEM_AT = "BackendTLSPolicy/team/api-tls: spec.validation.caCertificateRefs[0]"


@pytest.mark.parametrize(
    ("ca_ref", "trust", "expected"),
    [
        (
            CONFIG_MAP_REF,
            config_map('data:\n  ca.crt: "just text"\n'),
            f"{PROBLEM_AT}.name: ConfigMap \"team/api-ca\" key 'ca.crt' holds no PEM certificate",
        ),
        (
            CONFIG_MAP_REF,
            config_map(
                "data:\n  ca.crt: "
                + json.dumps("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
                + "\n"
            ),
            f"{PROBLEM_AT}.name: ConfigMap \"team/api-ca\" key 'ca.crt': a PEM certificate does not parse",
        ),
        (
            CONFIG_MAP_REF,
            config_map("data:\n  bundle.pem: x\n"),
            f"{PROBLEM_AT}.name: ConfigMap \"team/api-ca\" has no key 'ca.crt'",
        ),
        (CONFIG_MAP_REF, config_map("data: {}\n").replace("api-ca", "other"), f'{PROBLEM_AT}.name: ConfigMap "team/api-ca" not found'),
        (
            "{group: trust.cert-manager.io, kind: Bundle, name: api-ca}",
            config_map("data: {}\n"),
            f'{PROBLEM_AT}.kind: unsupported caCertificateRefs kind "trust.cert-manager.io/Bundle": '
            "a ConfigMap (key 'ca.crt') or a Secret",
        ),
    ],
)
def test_config_map_ca_problems_are_at_the_referencing_field(ca_ref: str, trust: str, expected: str) -> None:
    text = config(ca_ref, trust)
    assert [str(p) for p in compile_text(text).problems] == [f"{FILE}:{line_of(text, 'caCertificateRefs')}: {expected}"]


def test_config_map_is_a_config_kind() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\nbinaryData: {a: Yg==, c: '!!'}\nspec: {}\n"
    assert [str(p) for p in load_text(text, "t.yaml").problems] == [
        "t.yaml:6: ConfigMap/default/c: spec: unknown field",
        "t.yaml:5: ConfigMap/default/c: binaryData.c: invalid base64 data",
        "t.yaml:5: ConfigMap/default/c: binaryData.a: key 'a' is also in data",
    ]
    text = "apiVersion: v2\nkind: ConfigMap\nmetadata: {name: c}\n"
    assert [str(p) for p in load_text(text, "t.yaml").problems] == [
        "t.yaml:1: ConfigMap/default/c: apiVersion: ConfigMap is served as v1, not 'v2'"
    ]


def test_a_service_policy_with_a_config_map_ca_applies_to_a_kind_less_backend_ref(ca_pem: str) -> None:
    """The Kubernetes shape: a Service backendRef (no group/kind), a BackendTLSPolicy targeting the Service."""
    text = textwrap.dedent(
        f"""\
        apiVersion: clrk.apoxy.dev/v1alpha1
        kind: EgressGateway
        metadata: {{name: gw}}
        spec:
          listeners: [{{name: http, protocol: HTTP}}]
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {{name: h}}
        spec:
          parentRefs: [{{kind: Gateway, name: gw}}]
          rules: [{{backendRefs: [{{name: api, port: 443}}]}}]
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {{name: api-ca}}
        data: {{ca.crt: {json.dumps(ca_pem)}}}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: BackendTLSPolicy
        metadata: {{name: api-tls}}
        spec:
          targetRefs: [{{group: "", kind: Service, name: api}}]
          validation: {{caCertificateRefs: [{{kind: ConfigMap, name: api-ca}}], hostname: api.example.com}}
        """
    )
    result = compile_text(text)
    assert [str(p) for p in result.problems] == []
    assert result.snapshot is not None
    [service] = result.snapshot.routes[ObjectRef("HTTPRoute", "default", "h")].rules[0].backends
    tls = result.snapshot.compiled.tls_for(service.ref)
    assert tls.source == "BackendTLSPolicy/default/api-tls"
    assert [c.subject.rfc4514_string() for c in tls.ca_certificates] == ["CN=config map root"]
