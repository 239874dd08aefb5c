"""egressproxy/compiler/credential_material.py: providers' and policies' credentials compiled from YAML.

Each provider's convention, the SecretRef rules of DESIGN.md 4.1 (key `Authorization`, `Bearer ` dropped, a
one-key Secret read whatever its key), both AWS key spellings, policies indexed by scope, and Secret material
that does not make a credential reported as a problem that names the Secret but never the value.
"""

from __future__ import annotations

import json
import textwrap

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from egressproxy.compiler import compile_config
from egressproxy.compiler.mounted_secrets import MountedSecrets
from egressproxy.config.loader import load_text
from egressproxy.config.problems import ObjectRef
from egressproxy.credentials import Credential, CredentialTable
from egressproxy.snapshot import SecretData, Snapshot

GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  listeners:
  - {name: http, protocol: HTTP}
---
"""


def backend(name: str, block: str) -> str:
    return f"""apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec:
  type: AI
  ai: {{llm: {{{block}}}}}
---
"""


def secret(name: str, **values: str) -> str:
    data = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in values.items())
    return f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData:\n{data}---\n"


def compiled(text: str, mounted: MountedSecrets | None = None) -> tuple[Snapshot | None, list[str]]:
    loaded = load_text(textwrap.dedent(GATEWAY + text), "cfg.yaml")
    assert [str(p) for p in loaded.problems] == []
    result = compile_config(loaded.resources, mounted=mounted)
    return result.snapshot, [str(p) for p in result.problems]


def table(text: str, mounted: MountedSecrets | None = None) -> CredentialTable:
    snapshot, problems = compiled(text, mounted)
    assert problems == [] and snapshot is not None
    return snapshot.compiled.credentials


def provider_credential(text: str, name: str, mounted: MountedSecrets | None = None) -> Credential:
    credentials = table(text, mounted)
    [found] = [c for c in credentials.providers.values() if c.source.startswith(f"Backend/default/{name} ")]
    return found


def headers(cred: Credential) -> dict[str, str]:
    return {h.name: h.value for h in cred.headers}


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("openai: {authToken: {kind: Inline, inline: sk-1}}", {"authorization": "Bearer sk-1"}),
        ("anthropic: {authToken: {kind: Inline, inline: sk-1}}", {"x-api-key": "sk-1", "anthropic-version": "2023-06-01"}),
        ("anthropic: {apiVersion: '2024-09-09', authToken: {kind: Inline, inline: sk-1}}",
         {"x-api-key": "sk-1", "anthropic-version": "2024-09-09"}),
        ("gemini: {authToken: {kind: Inline, inline: g-1}}", {"x-goog-api-key": "g-1"}),
        ("vertexAi: {projectId: p, location: europe-west4, authToken: {kind: Inline, inline: ya29.t}}",
         {"authorization": "Bearer ya29.t"}),
        ("azureOpenai: {endpoint: r.openai.azure.com, deploymentName: d, authToken: {kind: Inline, inline: a-1}}",
         {"api-key": "a-1"}),
    ],
)
def test_each_provider_by_its_convention(block: str, expected: dict[str, str]) -> None:
    cred = provider_credential(backend("b", block), "b")
    assert headers(cred) == expected
    anthropic_default = [h for h in cred.headers if h.name == "anthropic-version"]
    if anthropic_default:
        assert anthropic_default[0].only_if_absent == ("apiVersion" not in block)


def test_azure_carries_its_deployment_and_configured_version() -> None:
    block = "azureOpenai: {endpoint: r.openai.azure.com, deploymentName: prod, apiVersion: 2024-10-21, authToken: {kind: Inline, inline: a}}"
    cred = provider_credential(backend("b", block), "b")
    assert cred.azure is not None and (cred.azure.deployment, cred.azure.api_version) == ("prod", "2024-10-21")


def test_secret_ref_reads_authorization_without_its_bearer_and_a_one_key_secret_whatever_its_key() -> None:
    text = (
        secret("k1", Authorization="Bearer sk-from-authorization\n", other="x")
        + secret("k2", whatever="sk-single-key")
        + backend("one", "openai: {authToken: {kind: SecretRef, secretRef: {name: k1}}}")
        + backend("two", "openai: {authToken: {kind: SecretRef, secretRef: {name: k2}}}")
    )
    assert headers(provider_credential(text, "one")) == {"authorization": "Bearer sk-from-authorization"}
    assert headers(provider_credential(text, "two")) == {"authorization": "Bearer sk-single-key"}


def test_a_mounted_secret_wins_over_the_config_one() -> None:
    text = secret("k", Authorization="from-config") + backend("b", "openai: {authToken: {kind: SecretRef, secretRef: {name: k}}}")
    mounted = MountedSecrets({"k": SecretData({"Authorization": b"from-mount\n"})})
    assert headers(provider_credential(text, "b", mounted)) == {"authorization": "Bearer from-mount"}


def test_passthrough_and_no_auth_token() -> None:
    text = backend("pass", "openai: {authToken: {kind: Passthrough}}") + backend("none", "openai: {model: m}")
    credentials = table(text)
    [cred] = credentials.providers.values()
    assert cred.passthrough and cred.source == "Backend/default/pass provider openai"


@pytest.mark.parametrize(
    "keys",
    [
        {"accessKey": "AKID", "secretKey": "s", "sessionToken": "t"},
        {"access_key_id": "AKID", "secret_access_key": "s", "session_token": "t"},
    ],
)
def test_bedrock_signs_with_either_spelling_of_the_key_pair_in_its_region(keys: dict[str, str]) -> None:
    text = secret("aws", **keys) + backend("b", "bedrock: {region: eu-west-1, auth: {type: Secret, secretRef: {name: aws}}}")
    cred = provider_credential(text, "b")
    assert cred.sigv4 is not None
    assert (cred.sigv4.access_key_id, cred.sigv4.secret_access_key, cred.sigv4.session_token) == ("AKID", "s", "t")
    assert (cred.sigv4.region, cred.sigv4.service) == ("eu-west-1", "bedrock")


def test_a_bedrock_secret_without_its_key_pair_is_a_problem_naming_no_value() -> None:
    text = secret("aws", accessKey="AKID-VALUE") + backend("b", "bedrock: {auth: {type: Secret, secretRef: {name: aws}}}")
    _, problems = compiled(text)
    assert len(problems) == 1
    assert "Backend/default/b: spec: provider bedrock: Secret/default/aws needs keys access_key_id and secret_access_key" in problems[0]
    assert "AKID-VALUE" not in problems[0]


def _service_account() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return json.dumps({"type": "service_account", "private_key": pem.decode(), "client_email": "sa@p.iam.gserviceaccount.com"})


def test_a_vertex_service_account_key_compiles_to_a_signer_with_googles_token_endpoint() -> None:
    text = secret("sa", **{"key.json": _service_account()}) + backend(
        "v", "vertexAi: {projectId: p, location: europe-west4, authToken: {kind: SecretRef, secretRef: {name: sa}}}"
    )
    cred = provider_credential(text, "v")
    assert cred.gcp is not None and cred.headers == ()
    assert (cred.gcp.client_email, cred.gcp.token_uri) == ("sa@p.iam.gserviceaccount.com", "https://oauth2.googleapis.com/token")
    assert cred.gcp.signer is not None and len(cred.gcp.cache_key) == 64


def test_a_service_account_key_that_is_no_key_is_a_problem_naming_no_value() -> None:
    bad = json.dumps({"type": "service_account", "private_key": "NOT-A-KEY-VALUE", "client_email": "sa@p"})
    text = secret("sa", token=bad) + """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {name: gcp}
spec:
  targetRefs: [{kind: EgressGateway, name: eg}]
  secretRef: {name: sa}
  target: ProviderAuth
  providerAuth: {type: GCPServiceAccount}
"""
    _, problems = compiled(text)
    assert problems == [
        'cfg.yaml:19: CredentialInjectionPolicy/default/gcp: spec.secretRef: Secret/default/sa key "token": '
        "not a Google service-account key (JSON with client_email and private_key)"
    ]


def _cip(name: str, target: str, body: str) -> str:
    return f"""apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {{name: {name}}}
spec:
  targetRefs: [{target}]
  secretRef: {{name: tok}}
{textwrap.indent(textwrap.dedent(body), '  ')}---
"""


ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, annotations: {egressproxy.io/allow-cleartext-credentials: "true"}}
spec:
  parentRefs: [{name: eg}]
  hostnames: [api.example.com]
  rules:
  - name: first
    backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: s}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: s}
spec:
  type: Static
  static: {hosts: [{host: api.example.com, port: 443}]}
---
"""


def test_policies_are_indexed_by_scope_with_their_targets() -> None:
    text = secret("tok", token="t-1", access_key_id="AKID", secret_access_key="s") + ROUTE + (
        _cip("a-header", "{kind: Backend, name: s}", "target: Header\nheaderName: X-Key\nvaluePrefix: 'Token '\n")
        + _cip("b-query", "{kind: Backend, name: s}", "target: QueryParam\nqueryParamName: api_key\n")
        + _cip("route", "{kind: HTTPRoute, name: r}", "target: ProviderAuth\nproviderAuth: {type: AWSv4, region: us-west-2, service: execute-api}\n")
        + _cip("rule", "{kind: HTTPRoute, name: r, sectionName: first}", "target: Header\nheaderName: x-rule\n")
        + _cip("listener", "{kind: EgressGateway, name: eg, sectionName: http}", "target: Header\nheaderName: x-listener\n")
        + _cip("gateway", "{kind: EgressGateway, name: eg}", "target: Header\nheaderName: x-gateway\n")
    )
    credentials = table(text)
    route = ObjectRef("HTTPRoute", "default", "r")
    backend_cred = credentials.scopes[("backend", ObjectRef("Backend", "default", "s"))]
    assert headers(backend_cred) == {"x-key": "Token t-1"}  # a header name is matched lower-case
    assert [(q.name, q.value) for q in backend_cred.query] == [("api_key", "t-1")]
    assert backend_cred.source == "CredentialInjectionPolicy/default/a-header, CredentialInjectionPolicy/default/b-query"
    sigv4 = credentials.scopes[("route", route)].sigv4
    assert sigv4 is not None and (sigv4.region, sigv4.service) == ("us-west-2", "execute-api")
    assert headers(credentials.scopes[("rule", (route, 0))]) == {"x-rule": "t-1"}
    assert headers(credentials.scopes[("listener", "http")]) == {"x-listener": "t-1"}
    assert headers(credentials.scopes[("gateway", None)]) == {"x-gateway": "t-1"}
    assert credentials.cleartext_routes == frozenset({route})


def test_the_dump_names_sources_and_headers_never_values() -> None:
    text = secret("tok", token="t-SECRET-1") + ROUTE + _cip("h", "{kind: Backend, name: s}", "target: Header\nheaderName: x-key\n")
    text += backend("ai", "openai: {authToken: {kind: Inline, inline: sk-SECRET-2}}")
    snapshot, problems = compiled(text)
    assert problems == [] and snapshot is not None
    dump = json.dumps(snapshot.to_dump())
    assert "x-key" in dump and "CredentialInjectionPolicy/default/h" in dump and "Backend/default/ai provider openai" in dump
    assert "SECRET" not in dump


def test_the_same_provider_block_in_two_backends_names_each_backend() -> None:
    block = "openai: {authToken: {kind: Inline, inline: sk-1}}"
    credentials = table(backend("a", block) + backend("b", block))
    assert sorted(c.source for c in credentials.providers.values()) == [
        "Backend/default/a provider openai",
        "Backend/default/b provider openai",
    ]


# --- an emptied Secret (a rotation caught half-way) -------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "  \n"])
def test_an_empty_policy_value_is_a_problem_not_an_empty_header(value: str) -> None:
    """Rejected, so a reload keeps the last good credential instead of injecting "" (or a bare prefix)."""
    text = secret("tok", token=value) + ROUTE + _cip("h", "{kind: Backend, name: s}", "target: Header\nheaderName: x-key\nvaluePrefix: 'Token '\n")
    _, problems = compiled(text)
    assert [p.split(": ", 1)[1] for p in problems] == ['CredentialInjectionPolicy/default/h: spec.secretRef: Secret/default/tok key "token" is empty']


@pytest.mark.parametrize("value", ["", "Bearer \n"])
def test_an_empty_provider_token_is_a_problem(value: str) -> None:
    text = secret("k", Authorization=value) + backend("b", "openai: {authToken: {kind: SecretRef, secretRef: {name: k}}}")
    _, problems = compiled(text)
    assert len(problems) == 1 and "Secret/default/k holds an empty token" in problems[0], problems
