"""Which chat API a request speaks, and where the other one lives.

Two formats are known: OpenAI Chat Completions (`POST /v1/chat/completions`) and Anthropic Messages
(`POST /v1/messages`). The path decides when it names one (a suffix match, so a prefixed path such as Azure's
`/openai/deployments/NAME/chat/completions` or a local server's `/api/v1/chat/completions` counts); otherwise the
body's shape decides, and a body that fits neither (or both) is `None`: the caller then does not translate.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

__all__ = ["ApiFormat", "detect_format", "path_for"]


class ApiFormat(StrEnum):
    OPENAI_CHAT = "openai-chat"
    ANTHROPIC_MESSAGES = "anthropic-messages"


_PATHS = {
    ApiFormat.OPENAI_CHAT: "/v1/chat/completions",
    ApiFormat.ANTHROPIC_MESSAGES: "/v1/messages",
}

# Members only one of the two request formats has (their public API references).
_OPENAI_ONLY = frozenset(
    {"n", "max_completion_tokens", "stop", "functions", "function_call", "response_format", "logprobs",
     "frequency_penalty", "presence_penalty", "logit_bias", "seed", "stream_options", "parallel_tool_calls",
     "user"}
)
_ANTHROPIC_ONLY = frozenset({"system", "stop_sequences", "top_k", "thinking", "anthropic_version"})
_OPENAI_ROLES = frozenset({"system", "developer", "tool", "function"})
_ANTHROPIC_BLOCKS = frozenset({"tool_use", "tool_result", "image", "document", "thinking", "redacted_thinking"})


def path_for(target: ApiFormat) -> str:
    """The standard endpoint path of a format (a provider's pathOverride, if any, replaces it)."""
    return _PATHS[target]


def detect_format(path: str, body: Any = None) -> ApiFormat | None:
    """The format of a request by its path (query ignored), else by its body's shape; `None` when unsure."""
    by_path = _format_of_path(path)
    if by_path is not None:
        return by_path
    if not isinstance(body, Mapping) or not isinstance(body.get("messages"), list):
        return None
    return _format_of_body(body)


def _format_of_path(path: str) -> ApiFormat | None:
    bare = path.split("?", 1)[0].rstrip("/")
    if bare.endswith("/chat/completions"):
        return ApiFormat.OPENAI_CHAT
    if bare.endswith("/v1/messages"):
        return ApiFormat.ANTHROPIC_MESSAGES
    return None


def _format_of_body(body: Mapping[str, Any]) -> ApiFormat | None:
    openai = any(key in body for key in _OPENAI_ONLY)
    anthropic = any(key in body for key in _ANTHROPIC_ONLY)
    for message in body["messages"]:
        if not isinstance(message, Mapping):
            continue
        if message.get("role") in _OPENAI_ROLES or "tool_calls" in message or "tool_call_id" in message:
            openai = True
        content = message.get("content")
        if isinstance(content, list):
            kinds = {part.get("type") for part in content if isinstance(part, Mapping)}
            if kinds & _ANTHROPIC_BLOCKS:
                anthropic = True
            if "image_url" in kinds or "input_audio" in kinds:
                openai = True
    if openai == anthropic:
        return None
    return ApiFormat.OPENAI_CHAT if openai else ApiFormat.ANTHROPIC_MESSAGES
