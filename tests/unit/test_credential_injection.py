"""egressproxy/credential_injection.py: each injector on a plain request value, without mitmproxy.

The rule under test each time: the workload's own credentials go first (unless Passthrough), the gateway's
are added exactly by the provider's convention, and a SigV4 signature verifies with botocore over the request
as sent.
"""

from __future__ import annotations

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from egressproxy.credential_injection import OutgoingRequest, aws_scope_from_host, cleartext_refused, inject
from egressproxy.credentials import AwsSigV4, AzureDeployment, Credential, GcpServiceAccount, SecretHeader, SecretQuery


def request(path: str = "/v1/chat/completions", *headers: tuple[str, str], body: bytes = b"{}") -> OutgoingRequest:
    return OutgoingRequest("POST", "https", "api.example.com", path, [("host", "api.example.com"), *headers], body)


WORKLOAD = (
    ("Authorization", "Bearer dummy"),
    ("X-Api-Key", "dummy"),
    ("api-key", "dummy"),
    ("x-goog-api-key", "dummy"),
    ("content-type", "application/json"),
)


def test_the_workloads_credentials_are_removed_before_the_gateways_is_set() -> None:
    req = request("/v1/x?key=dummy&alt=json", *WORKLOAD)
    inject(Credential("t", headers=(SecretHeader("authorization", "Bearer real"),)), req)
    assert req.headers == [("host", "api.example.com"), ("content-type", "application/json"), ("authorization", "Bearer real")]
    assert req.path == "/v1/x?alt=json"


def test_passthrough_leaves_the_request_as_the_workload_sent_it() -> None:
    req = request("/v1/x?key=mine", *WORKLOAD)
    before = (list(req.headers), req.path)
    inject(Credential("t", passthrough=True), req)
    assert (req.headers, req.path) == before


def test_a_query_parameter_credential_replaces_the_workloads() -> None:
    req = request("/v1/x?key=dummy&token=dummy&alt=json")
    inject(Credential("t", query=(SecretQuery("token", "real value"),)), req)
    assert req.path == "/v1/x?alt=json&token=real%20value"


def test_a_default_header_keeps_the_clients_value_and_a_configured_one_replaces_it() -> None:
    default = Credential("t", headers=(SecretHeader("x-api-key", "k"), SecretHeader("anthropic-version", "2023-06-01", True)))
    configured = Credential("t", headers=(SecretHeader("x-api-key", "k"), SecretHeader("anthropic-version", "2024-09-09")))
    sent = request("/v1/messages", ("anthropic-version", "2024-01-01"))
    inject(default, sent)
    assert sent.header("anthropic-version") == "2024-01-01"
    missing = request("/v1/messages")
    inject(default, missing)
    assert missing.header("anthropic-version") == "2023-06-01"
    forced = request("/v1/messages", ("anthropic-version", "2024-01-01"))
    inject(configured, forced)
    assert [v for n, v in forced.headers if n == "anthropic-version"] == ["2024-09-09"]


@pytest.mark.parametrize(
    ("path", "configured", "expected"),
    [
        ("/v1/chat/completions", "2024-10-21", "/openai/deployments/prod/chat/completions?api-version=2024-10-21"),
        ("/chat/completions", None, "/openai/deployments/prod/chat/completions?api-version=2024-10-21"),
        ("/openai/v1/embeddings", None, "/openai/deployments/prod/embeddings?api-version=2024-10-21"),
        (
            "/openai/deployments/other/chat/completions?api-version=2024-06-01",
            None,
            "/openai/deployments/prod/chat/completions?api-version=2024-06-01",
        ),
        (
            "/openai/deployments/other/chat/completions?api-version=2024-06-01&x=1",
            "2025-01-01",
            "/openai/deployments/prod/chat/completions?x=1&api-version=2025-01-01",
        ),
    ],
)
def test_azure_gets_its_deployment_path_and_api_version(path: str, configured: str | None, expected: str) -> None:
    req = request(path)
    inject(Credential("t", headers=(SecretHeader("api-key", "k"),), azure=AzureDeployment("prod", configured)), req)
    assert req.path == expected
    assert req.header("api-key") == "k"


def test_a_google_credential_needs_its_minted_token_and_sends_it_as_bearer() -> None:
    account = GcpServiceAccount("sa@p.iam.gserviceaccount.com", "https://oauth2.googleapis.com/token", None, "h")
    with pytest.raises(ValueError):
        inject(Credential("t", gcp=account), request())
    req = request("/v1/x", ("authorization", "Bearer dummy"))
    inject(Credential("t", gcp=account), req, "ya29.minted")
    assert [v for n, v in req.headers if n.lower() == "authorization"] == ["Bearer ya29.minted"]


def _verify(req: OutgoingRequest, secret: str, token: str | None, service: str, region: str) -> bool:
    """What AWS does: recompute the signature over the signed headers as received."""
    authorization = req.header("authorization") or ""
    signed = authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    headers = {n.lower(): v for n, v in req.headers}
    aws = AWSRequest(method=req.method, url=f"https://{req.authority}{req.path}", data=req.body, headers={n: headers[n] for n in signed})
    aws.context["timestamp"] = headers["x-amz-date"]
    auth = SigV4Auth(Credentials("AKID", secret, token), service, region)
    return auth.signature(auth.string_to_sign(aws, auth.canonical_request(aws)), aws) == authorization.rsplit("Signature=", 1)[1]


def test_sigv4_signs_the_request_as_sent_and_botocore_verifies_it() -> None:
    req = OutgoingRequest(
        "POST",
        "https",
        "bedrock-runtime.eu-west-1.amazonaws.com",
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke",
        [("host", "bedrock-runtime.eu-west-1.amazonaws.com"), ("content-type", "application/json"), ("x-amz-date", "20000101T000000Z"),
         ("authorization", "AWS4-HMAC-SHA256 dummy")],
        b'{"prompt": "hi"}',
    )
    inject(Credential("t", sigv4=AwsSigV4("AKID", "s3cr3t", "sess")), req)
    assert req.header("x-amz-security-token") == "sess"
    assert req.header("x-amz-date") != "20000101T000000Z"
    assert "/eu-west-1/bedrock/aws4_request" in (req.header("authorization") or "")
    assert _verify(req, "s3cr3t", "sess", "bedrock", "eu-west-1")
    assert not _verify(req, "other-secret", "sess", "bedrock", "eu-west-1")  # the check can fail
    req.body = b'{"prompt": "changed"}'
    assert not _verify(req, "s3cr3t", "sess", "bedrock", "eu-west-1")  # the body is covered


def test_sigv4_uses_the_configured_region_and_service_over_the_hosts() -> None:
    req = request("/x")
    inject(Credential("t", sigv4=AwsSigV4("AKID", "s", None, "us-west-2", "execute-api")), req)
    assert "/us-west-2/execute-api/aws4_request" in (req.header("authorization") or "")
    assert req.header("x-amz-security-token") is None


@pytest.mark.parametrize(
    ("host", "scope"),
    [
        ("bedrock-runtime.eu-west-1.amazonaws.com", ("eu-west-1", "bedrock")),
        ("sts.us-east-2.amazonaws.com:443", ("us-east-2", "sts")),
        ("api.example.com", ("us-east-1", "api")),
    ],
)
def test_aws_scope_from_host(host: str, scope: tuple[str, str]) -> None:
    assert aws_scope_from_host(host) == scope


def test_cleartext_is_refused_unless_the_route_allows_it_or_nothing_is_injected() -> None:
    cred = Credential("t", headers=(SecretHeader("x-api-key", "k"),))
    assert cleartext_refused(cred, "http", False)
    assert not cleartext_refused(cred, "http", True)
    assert not cleartext_refused(cred, "https", False)
    assert not cleartext_refused(Credential("t", passthrough=True), "http", False)


def test_no_value_shows_in_a_repr() -> None:
    cred = Credential(
        "Backend/ns/b provider openai",
        headers=(SecretHeader("authorization", "Bearer sk-value"),),
        query=(SecretQuery("key", "q-value"),),
        sigv4=AwsSigV4("AKID-value", "secret-value", "token-value"),
    )
    text = repr(cred) + repr(request("/", ("authorization", "Bearer workload-value")))
    for value in ("sk-value", "q-value", "AKID-value", "secret-value", "token-value", "workload-value"):
        assert value not in text


def test_sigv4_leaves_hop_by_hop_headers_out_of_the_signature() -> None:
    """A proxy may drop them on the way; a signed header that changes would break the signature."""
    req = request("/x", ("connection", "keep-alive"), ("transfer-encoding", "chunked"), ("content-type", "application/json"))
    inject(Credential("t", sigv4=AwsSigV4("AKID", "s")), req)
    signed = (req.header("authorization") or "").split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    assert signed == ["content-type", "host", "x-amz-date"]
