"""Which GenAI provider a request goes to and which model it asks for: the `gen_ai_client_token_usage` labels.

Names follow the OpenTelemetry GenAI semantic conventions (`gen_ai.provider.name`: `openai`, `anthropic`,
`aws.bedrock`, `gcp.vertex_ai`, `gcp.gemini`, `azure.ai.openai`, `mistral_ai`, ...). The provider comes from the
AI Backend the request is sent to, else from the well-known API host it names (a plain route or allow-all to
`api.openai.com` is still OpenAI traffic); any other host is no GenAI provider and its bodies are not parsed.

The requested model is the client's: the top-level `model` of a JSON body, Bedrock's `/model/{id}/...` path,
else the model the Backend configures. Label values stay bounded where they are observed (egressproxy/metrics.py).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from egressproxy.snapshot import AIProvider

__all__ = ["provider_name", "requested_model", "UNKNOWN_MODEL"]

UNKNOWN_MODEL = "unknown"
MAX_MODEL_BODY = 4 * 1024 * 1024  # a larger request body is not parsed for its model

# AIProvider.kind -> gen_ai.provider.name
_KIND_NAMES = {
    "openai": "openai",
    "anthropic": "anthropic",
    "bedrock": "aws.bedrock",
    "vertexai": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "azureopenai": "azure.ai.openai",
    "mistral": "mistral_ai",
    "deepseek": "deepseek",
    "perplexity": "perplexity",
    "xai": "x_ai",
    "groq": "groq",
    "cohere": "cohere",
}
_HOSTS = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "api.mistral.ai": "mistral_ai",
    "generativelanguage.googleapis.com": "gcp.gemini",
    "api.deepseek.com": "deepseek",
    "api.perplexity.ai": "perplexity",
    "api.x.ai": "x_ai",
    "api.groq.com": "groq",
    "api.cohere.com": "cohere",
}
_HOST_PATTERNS = (
    (re.compile(r"^bedrock-runtime(-fips)?\.[a-z0-9-]+\.amazonaws\.com$"), "aws.bedrock"),
    (re.compile(r"^([a-z0-9-]+-)?aiplatform\.googleapis\.com$"), "gcp.vertex_ai"),
    (re.compile(r"^[a-z0-9-]+\.openai\.azure\.com$"), "azure.ai.openai"),
)
_BEDROCK_MODEL = re.compile(r"^/model/([^/?]+)/")


def provider_name(provider: AIProvider | None, host: str | None) -> str | None:
    """The semantic-conventions provider name, or None when the request goes to no known GenAI provider."""
    if provider is not None:
        kind = provider.kind.lower()
        return _KIND_NAMES.get(kind, kind)
    if not host:
        return None
    host = host.lower().rstrip(".")
    name = _HOSTS.get(host)
    if name is not None:
        return name
    for pattern, pattern_name in _HOST_PATTERNS:
        if pattern.match(host):
            return pattern_name
    return None


def requested_model(body: bytes | None, path: str, configured: str | None) -> str:
    """The model the client asked for (JSON `model`, a Bedrock path), else the configured one, else `unknown`."""
    if body and len(body) <= MAX_MODEL_BODY and body.lstrip()[:1] == b"{":
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        model = document.get("model") if isinstance(document, dict) else None
        if isinstance(model, str) and model:
            return model
    match = _BEDROCK_MODEL.match(path)
    if match:
        return match.group(1)
    return configured or UNKNOWN_MODEL
