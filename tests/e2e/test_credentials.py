"""Credential injection through the real process, to fake providers on their real hostnames.

Every provider name resolves (hostAliases) to one TLS origin on a random loopback address, port 443, whose
certificate comes from the test CA in the gateway's trust bundle; the fake Google token endpoint has its own
address. Workloads (the official `openai` and `anthropic` SDKs, httpx for the rest) hold only a dummy key and
go through the explicit proxy, trusting the gateway's CA. Each test reads what the origin received.

One gateway serves the module, started with `--log-level debug` and a `--secrets-dir`, so the last tests can
look for every secret in its logs, `/config_dump`, `/metrics` and `explain` output.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt

from tests.support.gateway import GatewayProcess
from tests.support.origins import HttpOrigin
from tests.support.pki import TestCA
from tests.support.token_endpoint import TokenEndpoint
from tests.support.loopback import random_loopback

pytestmark = pytest.mark.e2e

OPENAI_KEY = "sk-openai-SECRET-one"
OPENAI_KEY_ROTATED = "sk-openai-SECRET-two"
ANTHROPIC_KEY = "sk-ant-SECRET-key"
ANTHROPIC_KEY_ROTATED = "sk-ant-SECRET-rotated"
AZURE_KEY = "azure-SECRET-inline"
GEMINI_KEY = "gemini-SECRET-key"
AWS_ACCESS_KEY = "AKIASECRETACCESS"
AWS_SECRET_KEY = "aws-SECRET-signing-key"
AWS_SESSION_TOKEN = "aws-SECRET-session-token"
GITHUB_TOKEN = "ghp_SECRET_github"
GATEWAY_WIDE = "gateway-wide-SECRET"
PLAIN_KEY = "plain-SECRET-key"
MAPS_KEY = "maps-SECRET key/+"
DUMMY = "dummy-workload-key"

PROVIDER_HOSTS = [
    "api.openai.com",
    "api.anthropic.com",
    "acme.openai.azure.com",
    "generativelanguage.googleapis.com",
    "europe-west4-aiplatform.googleapis.com",
    "bedrock-runtime.eu-west-1.amazonaws.com",
    "api.github.com",
    "other.example.test",
    "passthrough.example.test",
    "maps.example.test",
    "sts.eu-west-1.amazonaws.com",
]



def _service_account() -> tuple[dict[str, str], bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    info = {
        "type": "service_account",
        "project_id": "acme-inference",
        "private_key_id": "k1",
        "private_key": pem.decode(),
        "client_email": "gateway@acme-inference.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return info, public


def _secret(name: str, **values: str) -> str:
    data = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in values.items())
    return f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData:\n{data}"


def _ai_backend(name: str, block: str) -> str:
    return f"""apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec:
  type: AI
  ai:
    llm:
{textwrap.indent(textwrap.dedent(block).strip(), '      ')}
"""


def _route(name: str, host: str, backend: str | None = None, listener: str = "https", annotations: str = "") -> str:
    refs = f"\n  - backendRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: {backend}}}]" if backend else "\n  - {}"
    meta = f"{{name: {name}, annotations: {{{annotations}}}}}" if annotations else f"{{name: {name}}}"
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {meta}
spec:
  parentRefs: [{{name: eg, sectionName: {listener}}}]
  hostnames: [{host}]
  rules:{refs}
"""


def _cip(name: str, target: str, secret: str, header: str, prefix: str = "") -> str:
    return f"""apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {{name: {name}}}
spec:
  targetRefs: [{target}]
  secretRef: {{name: {secret}}}
  target: Header
  headerName: {header}
  valuePrefix: {json.dumps(prefix)}
"""


class Scene:
    """The running gateway, the origins and what the tests need to reach and check them."""

    def __init__(self, gw: GatewayProcess, origin: HttpOrigin, plain: HttpOrigin, tokens: TokenEndpoint,
                 secrets_dir: Path, sa_public: bytes, ca: Path, config: Path) -> None:
        self.gw, self.origin, self.plain, self.tokens = gw, origin, plain, tokens
        self.secrets_dir, self.sa_public, self.ca, self.config = secrets_dir, sa_public, ca, config

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(proxy=self.gw.proxy_url, verify=ssl.create_default_context(cafile=str(self.ca)), timeout=15, **kwargs)

    def seen(self, host: str) -> list[tuple[str, str, dict[str, str]]]:
        """Requests the origin received for `host`, headers lower-cased."""
        out = []
        for method, path, headers in list(self.origin.requests):
            lower = {k.lower(): v for k, v in headers.items()}
            if lower.get("host", "").split(":")[0] == host:
                out.append((method, path, lower))
        return out


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, origin_ca: TestCA, gateway_ca: tuple[Path, str]) -> Iterator[Scene]:
    tmp = tmp_path_factory.mktemp("credentials")
    provider_ip, token_ip = random_loopback(), random_loopback()
    cert, key = origin_ca.issue(*PROVIDER_HOSTS).write(tmp / "origin", "leaf")
    tcert, tkey = origin_ca.issue("oauth2.googleapis.com").write(tmp / "token", "leaf")
    sa_info, sa_public = _service_account()
    secrets_dir = tmp / "secrets"
    (secrets_dir / "openai-key").mkdir(parents=True)
    (secrets_dir / "openai-key" / "Authorization").write_text(f"Bearer {OPENAI_KEY}\n")
    (secrets_dir / "vertex-sa").mkdir()
    (secrets_dir / "vertex-sa" / "key.json").write_text(json.dumps(sa_info))
    with HttpOrigin(provider_ip, 443, tls=(cert, key), name="providers") as origin, HttpOrigin(name="plain") as plain, \
            TokenEndpoint(token_ip, 443, (tcert, tkey), expires_in=2) as tokens:
        trust = textwrap.indent(origin_ca.cert_pem.decode(), "    ")
        docs = [
            gateway_ca[1],
            f"apiVersion: v1\nkind: Secret\nmetadata: {{name: origin-ca}}\nstringData:\n  ca.crt: |\n{trust}",
            f"""apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners:
  - {{name: https, protocol: HTTPS, tls: {{mode: Terminate, caCertRef: {{name: egress-ca}}}}}}
  - {{name: http, protocol: HTTP}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {{name: origin-ca}}
    hostAliases:
    - {{ip: {provider_ip}, hostnames: {json.dumps(PROVIDER_HOSTS)}}}
    - {{ip: {token_ip}, hostnames: [oauth2.googleapis.com]}}
    - {{ip: 127.0.0.1, hostnames: [plain.example.test, plain-allowed.example.test]}}
""",
            _secret("anthropic-key", Authorization=ANTHROPIC_KEY),
            _secret("gemini-key", Authorization=f"Bearer {GEMINI_KEY}"),
            _secret("aws-keys", access_key_id=AWS_ACCESS_KEY, secret_access_key=AWS_SECRET_KEY, session_token=AWS_SESSION_TOKEN),
            _secret("github-token", token=GITHUB_TOKEN),
            _secret("gateway-wide", token=GATEWAY_WIDE),
            _secret("plain-key", token=PLAIN_KEY),
            _secret("maps-key", token=MAPS_KEY),
            _ai_backend("openai", "openai: {authToken: {kind: SecretRef, secretRef: {name: openai-key}}}"),
            _ai_backend(
                "anthropic",
                "anthropic: {model: claude-configured, authToken: {kind: SecretRef, secretRef: {name: anthropic-key}}}",
            ),
            _ai_backend(
                "azure",
                f"azureOpenai: {{endpoint: acme.openai.azure.com, deploymentName: gpt4o-prod, apiVersion: 2024-10-21, "
                f"authToken: {{kind: Inline, inline: {AZURE_KEY}}}}}",
            ),
            _ai_backend("gemini", "gemini: {model: gemini-1.5-flash, authToken: {kind: SecretRef, secretRef: {name: gemini-key}}}"),
            _ai_backend(
                "vertex",
                "vertexAi: {projectId: acme-inference, location: europe-west4, model: gemini-1.5-pro, "
                "authToken: {kind: SecretRef, secretRef: {name: vertex-sa}}}",
            ),
            _ai_backend("bedrock", "bedrock: {region: eu-west-1, auth: {type: Secret, secretRef: {name: aws-keys}}}"),
            _ai_backend(
                "passthrough",
                "openai: {authToken: {kind: Passthrough}, hostOverride: {host: passthrough.example.test, port: 443}}",
            ),
            _route("openai", "api.openai.com", "openai"),
            _route("anthropic", "api.anthropic.com", "anthropic"),
            _route("azure", "acme.openai.azure.com", "azure"),
            _route("gemini", "generativelanguage.googleapis.com", "gemini"),
            _route("vertex", "europe-west4-aiplatform.googleapis.com", "vertex"),
            _route("bedrock", "bedrock-runtime.eu-west-1.amazonaws.com", "bedrock"),
            _route("passthrough", "passthrough.example.test", "passthrough"),
            _route("github", "api.github.com"),
            _route("other", "other.example.test"),
            _route("maps", "maps.example.test"),
            _route("sts", "sts.eu-west-1.amazonaws.com"),
            _route("plain", "plain.example.test", listener="http"),
            _route("plain-allowed", "plain-allowed.example.test", listener="http",
                   annotations='egressproxy.io/allow-cleartext-credentials: "true"'),
            _cip("github", "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: github}", "github-token",
                 "Authorization", "Bearer "),
            """apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {name: maps}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: maps}]
  secretRef: {name: maps-key}
  target: QueryParam
  queryParamName: key
""",
            """apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {name: sts}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: sts}]
  secretRef: {name: aws-keys}
  target: ProviderAuth
  providerAuth: {type: AWSv4}
""",
            _cip("gateway-wide", "{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}", "gateway-wide", "x-partner-key"),
            _cip("plain", "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: plain}", "plain-key", "x-api-key"),
            _cip("plain-allowed", "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: plain-allowed}", "plain-key",
                 "x-api-key"),
        ]
        config = tmp / "config"
        config.mkdir()
        for i, doc in enumerate(docs):
            (config / f"{i:02d}.yaml").write_text(doc)
        gw = GatewayProcess(config, tmp / "data", extra_args=["--secrets-dir", str(secrets_dir), "--log-level", "debug"])
        with gw:
            yield Scene(gw, origin, plain, tokens, secrets_dir, sa_public, gateway_ca[0], config)


def _chat() -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_openai_sdk_gets_a_bearer_token_for_its_dummy_key(scene: Scene) -> None:
    with scene.client() as http:
        client = openai.OpenAI(api_key=DUMMY, http_client=http, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(**_chat())
    seen = raw.http_response.json()
    assert seen["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert seen["path"] == "/v1/chat/completions"
    assert DUMMY not in json.dumps(seen["headers"])
    assert "x-partner-key" not in seen["headers"]  # the provider's own credential beats the gateway-wide policy


def test_anthropic_sdk_gets_x_api_key_keeps_its_version_and_gets_the_configured_model(scene: Scene) -> None:
    # This SDK brings its own httpx fork (httpx2): its client, with the same proxy and trust.
    ctx = ssl.create_default_context(cafile=str(scene.ca))
    with anthropic.DefaultHttpxClient(proxy=scene.gw.proxy_url, verify=ctx, timeout=15) as http:
        client = anthropic.Anthropic(
            api_key=DUMMY, http_client=http, max_retries=0, default_headers={"anthropic-version": "2024-01-01"}
        )
        raw = client.messages.with_raw_response.create(
            model="claude-3-5-haiku-latest", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    seen = raw.http_response.json()
    assert seen["headers"]["x-api-key"] == ANTHROPIC_KEY
    assert seen["headers"]["anthropic-version"] == "2024-01-01"  # the client's own (no apiVersion configured)
    assert json.loads(seen["body"])["model"] == "claude-configured"  # the provider's model replaces the client's
    assert "authorization" not in seen["headers"]
    assert DUMMY not in json.dumps(seen["headers"])


def test_anthropic_version_defaults_when_the_client_sends_none(scene: Scene) -> None:
    with scene.client() as http:
        r = http.post("https://api.anthropic.com/v1/messages", headers={"x-api-key": DUMMY}, json={"max_tokens": 1})
    assert r.status_code == 200, r.text
    assert r.json()["headers"]["anthropic-version"] == "2023-06-01"
    assert r.json()["headers"]["x-api-key"] == ANTHROPIC_KEY


def test_azure_sdk_gets_api_key_and_the_configured_deployment_and_version(scene: Scene) -> None:
    with scene.client() as http:
        client = openai.AzureOpenAI(
            api_key=DUMMY, azure_endpoint="https://acme.openai.azure.com", api_version="2024-06-01", http_client=http,
            max_retries=0,
        )
        raw = client.chat.completions.with_raw_response.create(**{**_chat(), "model": "what-the-app-thinks"})
    seen = raw.http_response.json()
    assert seen["headers"]["api-key"] == AZURE_KEY
    assert seen["path"] == "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"


def test_openai_style_path_to_azure_is_rewritten_to_the_deployment(scene: Scene) -> None:
    with scene.client() as http:
        r = http.post("https://acme.openai.azure.com/v1/chat/completions", headers={"authorization": f"Bearer {DUMMY}"}, json=_chat())
    seen = r.json()
    assert seen["path"] == "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    assert seen["headers"]["api-key"] == AZURE_KEY and "authorization" not in seen["headers"]


def test_gemini_gets_x_goog_api_key_and_the_workloads_key_param_is_removed(scene: Scene) -> None:
    with scene.client() as http:
        r = http.post(
            f"https://generativelanguage.googleapis.com/v1beta/models/gemini-1.5-flash:generateContent?key={DUMMY}&alt=json",
            headers={"x-goog-api-key": DUMMY},
            json={"contents": []},
        )
    seen = r.json()
    assert seen["headers"]["x-goog-api-key"] == GEMINI_KEY
    assert seen["path"] == "/v1beta/models/gemini-1.5-flash:generateContent?alt=json"


def test_vertex_gets_a_token_minted_from_the_service_account_and_refreshed_when_it_expires(scene: Scene) -> None:
    url = "https://europe-west4-aiplatform.googleapis.com/v1/projects/acme-inference/locations/europe-west4/publishers/google/models/gemini-1.5-pro:generateContent"
    with scene.client() as http:
        first = http.post(url, headers={"authorization": f"Bearer {DUMMY}"}, json={"contents": []})
        assert first.status_code == 200, first.text + scene.gw.logs()[-3000:]
        token = first.json()["headers"]["authorization"]
        assert token.startswith("Bearer ya29.fake-")
        # The fake endpoint's tokens live 2 s: a later request carries a newer one, minted without a failure.
        deadline = time.monotonic() + 20
        while True:
            later = http.post(url, json={"contents": []})
            assert later.status_code == 200, later.text
            if later.json()["headers"]["authorization"] != token:
                break
            assert time.monotonic() < deadline, "the token was never refreshed"
    assert scene.tokens.grants and set(scene.tokens.grants) == {"urn:ietf:params:oauth:grant-type:jwt-bearer"}
    claims = jwt.decode(scene.tokens.assertions[-1], certs=scene.sa_public.decode(), audience="https://oauth2.googleapis.com/token")
    assert claims["iss"] == "gateway@acme-inference.iam.gserviceaccount.com"
    assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"


def test_bedrock_request_is_signed_sigv4_as_botocore_verifies_it(scene: Scene) -> None:
    path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke"
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 8, "messages": []})
    with scene.client() as http:
        r = http.post(
            f"https://bedrock-runtime.eu-west-1.amazonaws.com{path}",
            content=body,
            headers={"content-type": "application/json", "authorization": "AWS4-HMAC-SHA256 Credential=dummy", "x-amz-date": "20000101T000000Z"},
        )
    assert r.status_code == 200, r.text
    seen = r.json()
    headers = seen["headers"]
    assert headers["x-amz-security-token"] == AWS_SESSION_TOKEN
    authorization = headers["authorization"]
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={AWS_ACCESS_KEY}/")
    assert "/eu-west-1/bedrock/aws4_request" in authorization
    assert seen["body"] == body
    assert _sigv4_signature(seen["method"], seen["path"], headers, seen["body"].encode()) == authorization.rsplit("Signature=", 1)[1]


def test_a_policy_signs_any_aws_api_with_the_region_and_service_of_its_host(scene: Scene) -> None:
    with scene.client() as http:
        r = http.post("https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15", content=b"")
    seen = r.json()
    authorization = seen["headers"]["authorization"]
    assert "/eu-west-1/sts/aws4_request" in authorization
    signature = _sigv4_signature(seen["method"], seen["path"], seen["headers"], b"", service="sts", region="eu-west-1")
    assert signature == authorization.rsplit("Signature=", 1)[1]


def test_a_query_parameter_policy_replaces_the_workloads_key(scene: Scene) -> None:
    with scene.client() as http:
        seen = http.get("https://maps.example.test/geocode", params={"address": "x y", "key": DUMMY}).json()
    assert seen["path"] == "/geocode?address=x%20y&key=maps-SECRET%20key%2F%2B"


def _sigv4_signature(
    method: str, path: str, headers: dict[str, str], body: bytes, service: str = "bedrock", region: str = "eu-west-1"
) -> str:
    """Recompute the signature over what the origin received, with botocore, as AWS would."""
    signed = authorization_part(headers["authorization"], "SignedHeaders").split(";")
    request = AWSRequest(
        method=method,
        url=f"https://{headers['host']}{path}",
        data=body,
        headers={name: headers[name] for name in signed},
    )
    request.context["timestamp"] = headers["x-amz-date"]
    auth = SigV4Auth(Credentials(AWS_ACCESS_KEY, AWS_SECRET_KEY, AWS_SESSION_TOKEN), service, region)
    canonical = auth.canonical_request(request)
    return auth.signature(auth.string_to_sign(request, canonical), request)


def authorization_part(value: str, name: str) -> str:
    for part in value.split(" ", 1)[1].split(", "):
        key, _, val = part.partition("=")
        if key == name:
            return val
    raise AssertionError(f"{name} not in {value}")


def test_passthrough_keeps_the_workloads_key(scene: Scene) -> None:
    with scene.client() as http:
        client = openai.OpenAI(api_key=DUMMY, base_url="https://passthrough.example.test/v1", http_client=http, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(**_chat())
    assert raw.http_response.json()["headers"]["authorization"] == f"Bearer {DUMMY}"


def test_route_policy_beats_the_gateway_wide_one_which_covers_the_rest(scene: Scene) -> None:
    with scene.client() as http:
        github = http.get("https://api.github.com/user", headers={"authorization": f"token {DUMMY}"}).json()
        other = http.get("https://other.example.test/", headers={"x-partner-key": DUMMY}).json()
    assert github["headers"]["authorization"] == f"Bearer {GITHUB_TOKEN}"
    assert "x-partner-key" not in github["headers"]
    assert other["headers"]["x-partner-key"] == GATEWAY_WIDE


def test_no_credential_over_cleartext_unless_the_route_allows_it(scene: Scene) -> None:
    port = scene.plain.port
    with httpx.Client(proxy=scene.gw.proxy_url, timeout=15) as http:
        refused = http.get(f"http://plain.example.test:{port}/", headers={"x-api-key": DUMMY})
        allowed = http.get(f"http://plain-allowed.example.test:{port}/")
    assert refused.status_code == 502
    assert refused.headers["x-egress-error"] == "credential-requires-tls"
    assert PLAIN_KEY not in refused.text
    assert not [r for r in scene.plain.requests if r[2].get("Host", "").startswith("plain.example.test")]
    assert allowed.status_code == 200
    assert allowed.json()["headers"]["x-api-key"] == PLAIN_KEY


def test_a_rotated_mounted_secret_is_used_from_the_next_request_without_a_failed_one(scene: Scene) -> None:
    """A Kubernetes-style atomic swap of the mounted key while a workload keeps calling."""
    failures: list[str] = []
    keys: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        with scene.client() as http:
            while not stop.is_set():
                try:
                    r = http.post("https://api.openai.com/v1/chat/completions", headers={"authorization": f"Bearer {DUMMY}"}, json=_chat())
                except httpx.HTTPError as e:
                    failures.append(repr(e))
                    continue
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                else:
                    keys.append(r.json()["headers"]["authorization"])

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        _wait(lambda: len(keys) >= 3)
        staged = scene.secrets_dir / "staged-Authorization"
        staged.write_text(f"Bearer {OPENAI_KEY_ROTATED}\n")
        staged.replace(scene.secrets_dir / "openai-key" / "Authorization")
        _wait(lambda: f"Bearer {OPENAI_KEY_ROTATED}" in keys)
        count = len(keys)
        _wait(lambda: len(keys) >= count + 3)
    finally:
        stop.set()
        worker.join(timeout=20)
    assert failures == []
    switched = keys.index(f"Bearer {OPENAI_KEY_ROTATED}")
    assert set(keys[:switched]) == {f"Bearer {OPENAI_KEY}"}
    assert set(keys[switched:]) == {f"Bearer {OPENAI_KEY_ROTATED}"}


def test_a_changed_secret_in_the_config_folder_is_used_from_the_next_request(scene: Scene) -> None:
    """The anthropic-key Secret is one YAML file of the config folder: rewriting it (atomically) is a reload."""
    [path] = [p for p in scene.config.iterdir() if "metadata: {name: anthropic-key}" in p.read_text()]
    staged = scene.config.parent / "staged.yaml"
    staged.write_text(_secret("anthropic-key", Authorization=ANTHROPIC_KEY_ROTATED))
    staged.replace(path)
    seen: list[str] = []
    with scene.client() as http:
        deadline = time.monotonic() + 20
        while not seen or seen[-1] != ANTHROPIC_KEY_ROTATED:
            assert time.monotonic() < deadline, "the rotated key was never used"
            r = http.post("https://api.anthropic.com/v1/messages", headers={"x-api-key": DUMMY}, json={})
            assert r.status_code == 200, r.text
            seen.append(r.json()["headers"]["x-api-key"])
    assert set(seen) <= {ANTHROPIC_KEY, ANTHROPIC_KEY_ROTATED}


def _wait(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


SECRETS = [OPENAI_KEY, OPENAI_KEY_ROTATED, ANTHROPIC_KEY, ANTHROPIC_KEY_ROTATED, AZURE_KEY, GEMINI_KEY, AWS_SECRET_KEY, AWS_SESSION_TOKEN,
           GITHUB_TOKEN, GATEWAY_WIDE, PLAIN_KEY, "maps-SECRET", "PRIVATE KEY", "ya29.fake-"]


def test_no_secret_in_debug_logs_config_dump_metrics_or_explain(scene: Scene) -> None:
    with scene.client() as http:  # at least one request of each kind has gone through by now; make sure of one
        assert http.post("https://api.anthropic.com/v1/messages", json={}).status_code == 200
    dump = scene.gw.admin("/config_dump").text
    assert '"credentials"' in dump and "x-api-key" in dump  # the table is there, by header name
    explain = subprocess.run(
        [sys.executable, "-m", "egressproxy", "explain", "-c", str(scene.config), "--secrets-dir", str(scene.secrets_dir),
         "--json", "https://api.anthropic.com/v1/messages", "--method", "POST"],
        capture_output=True, text=True, timeout=60,
    )
    assert explain.returncode == 0, explain.stdout + explain.stderr
    logs = scene.gw.logs()
    assert "level=debug" in logs  # debug logging was on
    for where, text in {"logs": logs, "config_dump": dump, "metrics": scene.gw.metrics(), "explain": explain.stdout + explain.stderr}.items():
        leaked = [s for s in SECRETS if s in text]
        assert leaked == [], f"{where} shows {leaked}"
