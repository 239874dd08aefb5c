"""egressproxy/model_rewrite.py: the provider's configured model replaces the body's, for body-model providers."""

from __future__ import annotations

import json
from types import MappingProxyType

import pytest

from egressproxy.model_rewrite import configured_model, rewrite_model
from egressproxy.snapshot import AIProvider


def provider(kind: str, **config: str) -> AIProvider:
    return AIProvider(kind, kind, config=MappingProxyType(config))


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (provider("openai", model="gpt-4o"), "gpt-4o"),
        (provider("anthropic", model="claude"), "claude"),
        (provider("mistral", model="m"), "m"),
        (provider("openai"), None),
        (provider("gemini", model="g"), None),  # in the URL path: not rewritten
        (provider("azureOpenai", deploymentName="d"), None),
        (None, None),
    ],
)
def test_configured_model(p: AIProvider | None, expected: str | None) -> None:
    assert configured_model(p) == expected


def test_the_body_model_is_replaced_and_the_rest_kept() -> None:
    out = rewrite_model(b'{"model": "asked", "messages": [{"content": "h\\u00e9"}]}', "configured")
    assert out is not None
    assert json.loads(out) == {"model": "configured", "messages": [{"content": "h\u00e9"}]}


@pytest.mark.parametrize("body", [b"", b"not json", b"[1]", b'{"messages": []}', b'{"model": 3}', b'{"model": "same"}'])
def test_nothing_to_replace_leaves_the_body_alone(body: bytes) -> None:
    assert rewrite_model(body, "same") is None
