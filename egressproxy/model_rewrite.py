"""The provider's configured `model` replaces the model the client asked for (kgateway's AI Backend `model`).

Only for providers that name the model in the JSON body (OpenAI, Anthropic, Mistral and OpenAI-compatible
servers); Gemini, Vertex AI and Bedrock name it in the URL path, which is not rewritten (enforcement.py says so),
and Azure OpenAI's deployment is its path (credential_injection.py). A body that is not a JSON object with a
string `model` is left alone: the request goes as the client wrote it.
"""

from __future__ import annotations

import json

from egressproxy.snapshot import AIProvider

__all__ = ["BODY_MODEL_PROVIDERS", "configured_model", "rewrite_model"]

BODY_MODEL_PROVIDERS = frozenset({"openai", "anthropic", "mistral"})


def configured_model(provider: AIProvider | None) -> str | None:
    """The model a provider's block configures, when the gateway puts it in the body; else None."""
    if provider is None or provider.kind not in BODY_MODEL_PROVIDERS:
        return None
    model = provider.config.get("model")
    return model if isinstance(model, str) and model else None


def rewrite_model(body: bytes, model: str) -> bytes | None:
    """`body` with its top-level `model` replaced by `model`; None when there is nothing to replace."""
    if not body or not body.lstrip().startswith(b"{"):
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("model"), str) or document["model"] == model:
        return None
    document["model"] = model
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
