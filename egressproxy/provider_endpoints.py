"""Where an AI provider is reached: its `hostOverride`, else the provider's well-known public endpoint.

One table, so the data plane, `explain` and a region allow-list agree on the host a provider means. A
`hostOverride` (DESIGN.md 4.1 "More pinned details") is a configured address and is trusted by the SSRF guard
like a Static Backend; a well-known endpoint is a public name and goes through the guard like any other.
Regional providers (Bedrock, Vertex AI) put their region in the host name; Azure OpenAI names the resource
in `azureOpenai.endpoint` (a host or a URL).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from egressproxy.hostnames import InvalidHostname, canonical_host
from egressproxy.snapshot import AIProvider

__all__ = ["BEDROCK_DEFAULT_REGION", "Endpoint", "provider_api", "provider_endpoint"]

BEDROCK_DEFAULT_REGION = "us-east-1"  # kgateway's default when a Bedrock provider names no region


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str  # canonical
    port: int
    scheme: str  # https | http
    trusted: bool  # a hostOverride: a configured address, trusted like a Static Backend


def _fixed(host: str) -> Callable[[AIProvider], str | None]:
    return lambda _provider: host


def _azure(provider: AIProvider) -> str | None:
    endpoint = provider.config.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        return None
    return urlsplit(endpoint).hostname if "://" in endpoint else endpoint.split("/", 1)[0].rsplit(":", 1)[0]


def _bedrock(provider: AIProvider) -> str | None:
    return f"bedrock-runtime.{provider.region or BEDROCK_DEFAULT_REGION}.amazonaws.com"


def _vertex(provider: AIProvider) -> str | None:
    return f"{provider.region}-aiplatform.googleapis.com" if provider.region else None


# provider kind -> its public endpoint host (None: the configuration does not say where it is)
WELL_KNOWN: dict[str, Callable[[AIProvider], str | None]] = {
    "openai": _fixed("api.openai.com"),
    "anthropic": _fixed("api.anthropic.com"),
    "gemini": _fixed("generativelanguage.googleapis.com"),
    "mistral": _fixed("api.mistral.ai"),
    "azureOpenai": _azure,
    "bedrock": _bedrock,
    "vertexAi": _vertex,
}


def provider_endpoint(provider: AIProvider) -> Endpoint | None:
    """The host, port and scheme the gateway dials for `provider`; None when neither an override nor a
    well-known endpoint names one (an unknown kind, Azure without `endpoint`, Vertex AI without a region)."""
    if provider.host:
        scheme = provider.scheme or "https"
        port = provider.port or (443 if scheme == "https" else 80)
        return Endpoint(provider.host, int(port), scheme, True)
    known = WELL_KNOWN.get(provider.kind)
    host = known(provider) if known is not None else None
    if not host:
        return None
    try:
        host = canonical_host(host)
    except InvalidHostname:
        return None
    return Endpoint(host, int(provider.port or 443), "https", False)


# The request format each provider kind speaks; every other kind is OpenAI-compatible (OpenAI, Azure OpenAI,
# Mistral, local model servers).
_API_FORMATS = {"anthropic": "anthropic", "bedrock": "bedrock", "gemini": "gemini", "vertexAi": "gemini", "vertexai": "gemini"}


def provider_api(provider: AIProvider) -> str:
    """The API format a provider speaks: `openai`, `anthropic`, `gemini` or `bedrock`."""
    return _API_FORMATS.get(provider.kind, "openai")
