"""GenAI provider names and requested models (egressproxy/gen_ai.py): the token histogram's labels."""

from __future__ import annotations

import json

import pytest

from egressproxy.gen_ai import provider_name, requested_model
from egressproxy.snapshot import AIProvider


@pytest.mark.parametrize(
    ("kind", "name"),
    [("openai", "openai"), ("anthropic", "anthropic"), ("bedrock", "aws.bedrock"), ("vertexAi", "gcp.vertex_ai"),
     ("azureOpenai", "azure.ai.openai"), ("gemini", "gcp.gemini"), ("mistral", "mistral_ai")],
)
def test_an_ai_backend_names_its_provider_by_the_semantic_conventions(kind: str, name: str) -> None:
    assert provider_name(AIProvider(name="x", kind=kind), "llm.internal.test") == name


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("api.openai.com", "openai"),
        ("API.Anthropic.com.", "anthropic"),
        ("bedrock-runtime.eu-west-1.amazonaws.com", "aws.bedrock"),
        ("europe-west4-aiplatform.googleapis.com", "gcp.vertex_ai"),
        ("myres.openai.azure.com", "azure.ai.openai"),
        ("example.com", None),  # no provider: its bodies are never parsed for usage
        (None, None),
    ],
)
def test_without_an_ai_backend_well_known_api_hosts_name_the_provider(host: str | None, name: str | None) -> None:
    assert provider_name(None, host) == name


def test_the_requested_model_is_the_clients_then_the_path_then_the_configured_one() -> None:
    body = json.dumps({"model": "gpt-4o-mini", "messages": []}).encode()
    assert requested_model(body, "/v1/chat/completions", "gpt-4o") == "gpt-4o-mini"
    assert requested_model(b"{}", "/model/anthropic.claude-3-haiku/converse", None) == "anthropic.claude-3-haiku"
    assert requested_model(b"not json", "/v1/chat/completions", "gpt-4o") == "gpt-4o"
    assert requested_model(None, "/", None) == "unknown"
    assert requested_model(b'{"model": 7}', "/", None) == "unknown"
