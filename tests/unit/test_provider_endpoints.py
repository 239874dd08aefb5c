"""Where each AI provider is dialled (egressproxy/provider_endpoints.py): hostOverride, else its public endpoint."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from egressproxy.provider_endpoints import Endpoint, provider_endpoint
from egressproxy.snapshot import AIProvider


def _provider(kind: str, **kwargs: object) -> AIProvider:
    config = kwargs.pop("config", {})
    return AIProvider(name=kind, kind=kind, config=MappingProxyType(dict(config)), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "provider,host",
    [
        (_provider("openai"), "api.openai.com"),
        (_provider("anthropic"), "api.anthropic.com"),
        (_provider("gemini"), "generativelanguage.googleapis.com"),
        (_provider("mistral"), "api.mistral.ai"),
        (_provider("azureOpenai", config={"endpoint": "https://My-Res.openai.azure.com/openai"}), "my-res.openai.azure.com"),
        (_provider("azureOpenai", config={"endpoint": "my-res.openai.azure.com"}), "my-res.openai.azure.com"),
        (_provider("bedrock", region="eu-west-1"), "bedrock-runtime.eu-west-1.amazonaws.com"),
        (_provider("bedrock"), "bedrock-runtime.us-east-1.amazonaws.com"),
        (_provider("vertexAi", region="europe-west4"), "europe-west4-aiplatform.googleapis.com"),
    ],
)
def test_well_known_endpoints_are_public_https_and_untrusted(provider: AIProvider, host: str) -> None:
    assert provider_endpoint(provider) == Endpoint(host, 443, "https", False)


@pytest.mark.parametrize(
    "provider",
    [_provider("azureOpenai"), _provider("vertexAi"), _provider("unknown")],
)
def test_no_endpoint_when_the_configuration_does_not_say_where(provider: AIProvider) -> None:
    assert provider_endpoint(provider) is None


def test_a_host_override_is_trusted_and_its_port_defaults_by_scheme() -> None:
    assert provider_endpoint(_provider("openai", host="vllm.models.svc", scheme="http")) == Endpoint("vllm.models.svc", 80, "http", True)
    assert provider_endpoint(_provider("anthropic", host="10.0.0.5", port=8443)) == Endpoint("10.0.0.5", 8443, "https", True)
