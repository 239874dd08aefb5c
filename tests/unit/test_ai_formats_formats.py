"""Which format a request speaks, and the other's path (egressproxy/ai_formats/formats.py)."""

from __future__ import annotations

from typing import Any

import pytest

from egressproxy.ai_formats import ApiFormat, detect_format, path_for

OPENAI = ApiFormat.OPENAI_CHAT
ANTHROPIC = ApiFormat.ANTHROPIC_MESSAGES
USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("path", "expected"), [
    ("/v1/chat/completions", OPENAI),
    ("/v1/chat/completions?x=1", OPENAI),
    ("/openai/deployments/gpt4/chat/completions?api-version=2024-10-21", OPENAI),
    ("/api/v1/chat/completions/", OPENAI),
    ("/v1/messages", ANTHROPIC),
    ("/v1/messages?beta=true", ANTHROPIC),
    ("/v1/messages/count_tokens", None),
    ("/v1/threads/t1/messages", None),
    ("/v1/completions", None),
])
def test_by_path(path: str, expected: ApiFormat | None) -> None:
    assert detect_format(path, {"messages": USER}) is expected  # the body alone would not tell


@pytest.mark.parametrize(("body", "expected"), [
    ({"messages": USER, "max_completion_tokens": 5}, OPENAI),
    ({"messages": [{"role": "system", "content": "s"}, *USER]}, OPENAI),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]}, OPENAI),
    ({"messages": USER, "system": "s", "max_tokens": 5}, ANTHROPIC),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]}, ANTHROPIC),
    ({"messages": USER, "max_tokens": 5}, None),  # both APIs accept this body
    ({"messages": USER, "system": "s", "n": 1}, None),  # contradicts itself
    ({"prompt": "hi"}, None),
    (None, None),
])
def test_by_body_shape_when_the_path_says_nothing(body: Any, expected: ApiFormat | None) -> None:
    assert detect_format("/proxy/llm", body) is expected


def test_paths_for_each_format() -> None:
    assert path_for(OPENAI) == "/v1/chat/completions"
    assert path_for(ANTHROPIC) == "/v1/messages"
