"""Why a completion ended, in each format's words (the table is the rule; both directions read it).

OpenAI `finish_reason` -> Anthropic `stop_reason`, and back. Anthropic has reasons OpenAI cannot tell apart:
`stop_sequence` and `pause_turn` become `stop`, `model_context_window_exceeded` becomes `length`. OpenAI's
legacy `function_call` is `tool_use`. A reason neither table knows passes as the target's ordinary end.
"""

from __future__ import annotations

__all__ = ["to_anthropic_stop_reason", "to_openai_finish_reason"]

_TO_ANTHROPIC = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_TO_OPENAI = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def to_anthropic_stop_reason(finish_reason: object) -> str | None:
    """`None` stays `None` (a response still running has no reason yet)."""
    if finish_reason is None:
        return None
    return _TO_ANTHROPIC.get(str(finish_reason), "end_turn")


def to_openai_finish_reason(stop_reason: object) -> str | None:
    if stop_reason is None:
        return None
    return _TO_OPENAI.get(str(stop_reason), "stop")
