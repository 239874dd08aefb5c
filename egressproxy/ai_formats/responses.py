"""Non-streamed response bodies, both ways: OpenAI `chat.completion` <-> Anthropic `message`.

- Content: OpenAI's `message.content` (and a `refusal`) <-> Anthropic text blocks (several text blocks join
  into one string); `tool_calls` <-> `tool_use` blocks (arguments parsed / serialised as JSON). Anthropic
  `thinking` blocks are dropped; only OpenAI's first choice is read (the translated request asked for one).
- `finish_reason` <-> `stop_reason` by `stop_reasons`; Anthropic's `stop_sequence` member is null from OpenAI.
- Usage: `prompt_tokens` <-> `input_tokens` and `completion_tokens` <-> `output_tokens`; Anthropic's cache
  reads and writes count into `prompt_tokens` (OpenAI's prompt count includes cached tokens), and
  `total_tokens` is their sum.
- `model`: the model the client asked for (`reported_model`), not the provider's model: the client sees the
  answer to the request it sent, and the gateway's metrics use the same name (`gen_ai_request_model`). Which
  provider answered is for the gateway's own records, not the body.
- `id`: the provider's id with the other format's prefix (`msg_` / `chatcmpl-`), so a support ticket still
  finds the provider's record. OpenAI's `created` is when the translation ran unless the caller passes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from egressproxy.ai_formats.errors import MalformedPayload
from egressproxy.ai_formats.stop_reasons import to_anthropic_stop_reason, to_openai_finish_reason

__all__ = ["to_anthropic_response", "to_openai_response", "anthropic_usage", "openai_usage", "message_id",
           "completion_id"]


def to_anthropic_response(body: Mapping[str, Any], reported_model: str) -> dict[str, Any]:
    """An OpenAI chat.completion -> an Anthropic message."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise MalformedPayload("choices", "must hold at least one choice")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise MalformedPayload("choices[0].message", "must be an object")
    return {
        "id": message_id(body.get("id")),
        "type": "message",
        "role": "assistant",
        "model": reported_model,
        "content": _anthropic_content(message),
        "stop_reason": to_anthropic_stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": anthropic_usage(body.get("usage")),
    }


def to_openai_response(body: Mapping[str, Any], reported_model: str, created: int | None = None) -> dict[str, Any]:
    """An Anthropic message -> an OpenAI chat.completion."""
    content = body.get("content")
    if not isinstance(content, list):
        raise MalformedPayload("content", "must be a list of blocks")
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    texts = [str(b.get("text", "")) for b in content if isinstance(b, Mapping) and b.get("type") == "text"]
    if texts:
        message["content"] = "".join(texts)
    calls = [_tool_call(b) for b in content if isinstance(b, Mapping) and b.get("type") == "tool_use"]
    if calls:
        message["tool_calls"] = calls
    return {
        "id": completion_id(body.get("id")),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": reported_model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": to_openai_finish_reason(body.get("stop_reason")) or "stop"}],
        "usage": openai_usage(body.get("usage")),
    }


def message_id(openai_id: Any) -> str:
    bare = str(openai_id) if openai_id else "translated"
    return bare if bare.startswith("msg_") else f"msg_{bare.removeprefix('chatcmpl-')}"


def completion_id(anthropic_id: Any) -> str:
    bare = str(anthropic_id) if anthropic_id else "translated"
    return bare if bare.startswith("chatcmpl-") else f"chatcmpl-{bare.removeprefix('msg_')}"


def anthropic_usage(usage: Any) -> dict[str, int]:
    """OpenAI usage -> Anthropic usage (zeros where OpenAI reported none)."""
    usage = usage if isinstance(usage, Mapping) else {}
    return {"input_tokens": _count(usage.get("prompt_tokens")), "output_tokens": _count(usage.get("completion_tokens"))}


def openai_usage(usage: Any) -> dict[str, int]:
    """Anthropic usage -> OpenAI usage (cache reads and writes are prompt tokens too)."""
    usage = usage if isinstance(usage, Mapping) else {}
    prompt = sum(_count(usage.get(key)) for key in
                 ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
    completion = _count(usage.get("output_tokens"))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _anthropic_content(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, str) and content:
        blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):  # some compatible servers send parts
        text = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text")
        if text:
            blocks.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        blocks.append({"type": "text", "text": refusal})
    calls = message.get("tool_calls")
    for index, call in enumerate(calls if isinstance(calls, list) else []):
        blocks.append(_tool_use(call, f"choices[0].message.tool_calls[{index}]"))
    return blocks


def _tool_use(call: Any, path: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping):
        raise MalformedPayload(path, "must name a function")
    raw = function.get("arguments") or "{}"
    try:
        arguments = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise MalformedPayload(f"{path}.function.arguments", "is not JSON") from None
    if not isinstance(arguments, dict):
        raise MalformedPayload(f"{path}.function.arguments", "is not a JSON object")
    return {"type": "tool_use", "id": str(call.get("id")), "name": str(function.get("name")), "input": arguments}


def _tool_call(block: Mapping[str, Any]) -> dict[str, Any]:
    arguments = json.dumps(block.get("input", {}), separators=(",", ":"), ensure_ascii=False)
    return {"id": str(block.get("id")), "type": "function",
            "function": {"name": str(block.get("name")), "arguments": arguments}}
