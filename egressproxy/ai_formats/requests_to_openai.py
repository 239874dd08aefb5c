"""An Anthropic Messages request -> an OpenAI Chat Completions request.

What maps (Anthropic -> OpenAI):
- top-level `system` (string or text blocks) -> one leading `system` message (blocks become text parts);
- `user` content: a string stays a string; blocks: text -> text part, image (base64 -> `data:` URL, url ->
  url) -> `image_url` part; `tool_result` blocks -> `tool` messages placed before the rest of that turn;
- `assistant` text blocks -> `content` (joined), `tool_use` -> `tool_calls` (input serialised as JSON);
  `thinking` and `redacted_thinking` blocks are dropped (noted);
- `max_tokens` -> `max_tokens` (or `max_completion_tokens`, which OpenAI's reasoning models require: the
  caller chooses), `temperature`, `top_p`, `stop_sequences` -> `stop`, `stream` (with `stream_options:
  {include_usage: true}`, so the translated stream can report usage);
- `tools` -> function tools (`input_schema` -> `parameters`); `tool_choice` auto/any/tool/none ->
  auto/required/named/none, `disable_parallel_tool_use` -> `parallel_tool_calls: false`;
- `metadata.user_id` -> `user`.

What refuses (`Untranslatable`): server tools (web search, code execution, computer use: a tool with a `type`
other than `custom`), `document`, `search_result` and other non-text/image blocks, images inside tool results,
more than 4 stop sequences (OpenAI's limit). Dropped and noted: `top_k`, `thinking`, `cache_control`, `citations`,
`is_error` of a tool result (the text is kept), `service_tier`, `container`, `mcp_servers`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from egressproxy.ai_formats.errors import MalformedPayload, Untranslatable
from egressproxy.ai_formats.translated import Losses, TranslatedRequest

__all__ = ["to_openai_request"]

_KNOWN = frozenset(
    {"model", "messages", "system", "max_tokens", "temperature", "top_p", "stop_sequences", "stream", "tools",
     "tool_choice", "metadata"}
)
_MAX_STOP = 4  # OpenAI accepts at most 4 stop sequences


def to_openai_request(
    body: Mapping[str, Any],
    model: str,
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
) -> TranslatedRequest:
    """Translate `body` (a parsed Anthropic messages request) for an OpenAI-compatible server, for `model`.

    `max_tokens` is the default field because every OpenAI-compatible local server reads it; OpenAI's reasoning
    models reject it and need `max_completion_tokens`."""
    losses = Losses()
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise MalformedPayload("messages", "must be a non-empty list")
    out: dict[str, Any] = {"model": model, "messages": _system(body.get("system"), losses)}
    for index, message in enumerate(messages):
        out["messages"].extend(_message(message, f"messages[{index}]", losses))
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        out[max_tokens_field] = max_tokens
    for key in ("temperature", "top_p"):
        if isinstance(body.get(key), (int, float)) and not isinstance(body.get(key), bool):
            out[key] = body[key]
    _stop(body.get("stop_sequences"), out)
    stream = body.get("stream") is True
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    _tools(body, out, losses)
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    for key in body:
        if key not in _KNOWN:
            losses.note(key, "no OpenAI equivalent, dropped")
    return TranslatedRequest(out, stream, stream, tuple(losses.notes))


def _stop(stop: Any, out: dict[str, Any]) -> None:
    if not isinstance(stop, list) or not stop:
        return
    if len(stop) > _MAX_STOP:
        raise Untranslatable("stop_sequences", "OpenAI accepts at most 4 stop sequences")
    out["stop"] = [s for s in stop if isinstance(s, str)]


def _system(system: Any, losses: Losses) -> list[dict[str, Any]]:
    if system is None or system == "" or system == []:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    return [{"role": "system", "content": _text_parts(system, "system", losses)}]


def _text_parts(blocks: Any, path: str, losses: Losses) -> list[dict[str, Any]]:
    if not isinstance(blocks, list):
        raise MalformedPayload(path, "must be a string or a list of blocks")
    parts = []
    for index, block in enumerate(blocks):
        if not isinstance(block, Mapping) or block.get("type") != "text":
            raise Untranslatable(f"{path}[{index}]", "only text blocks can be translated here")
        _note_extras(block, f"{path}[{index}]", losses)
        parts.append({"type": "text", "text": str(block.get("text", ""))})
    return parts


def _note_extras(block: Mapping[str, Any], path: str, losses: Losses) -> None:
    for key in ("cache_control", "citations"):
        if block.get(key) is not None:
            losses.note(f"{path}.{key}", "no OpenAI equivalent, dropped")


def _message(message: Any, path: str, losses: Losses) -> list[dict[str, Any]]:
    if not isinstance(message, Mapping):
        raise MalformedPayload(path, "must be an object")
    role = message.get("role")
    content = message.get("content")
    if role == "user":
        return _user(content, f"{path}.content", losses)
    if role == "assistant":
        return [_assistant(content, f"{path}.content", losses)]
    raise MalformedPayload(f"{path}.role", "must be user or assistant")


def _user(content: Any, path: str, losses: Losses) -> list[dict[str, Any]]:
    """Tool results first (as `tool` messages, answering the previous assistant turn), then the rest."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise MalformedPayload(path, "must be a string or a list of blocks")
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        block_path = f"{path}[{index}]"
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "tool_result":
            results.append(_tool_message(block, block_path, losses))
        elif kind == "text":
            _note_extras(block, block_path, losses)
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block.get("source"), block_path)}})
        else:
            raise Untranslatable(block_path, "this content block cannot be translated to OpenAI")
    if parts:
        results.append({"role": "user", "content": parts})
    return results


def _image_url(source: Any, path: str) -> str:
    if isinstance(source, Mapping) and source.get("type") == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data')}"
    if isinstance(source, Mapping) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    raise Untranslatable(f"{path}.source", "only base64 and url image sources can be translated")


def _tool_message(block: Mapping[str, Any], path: str, losses: Losses) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise MalformedPayload(f"{path}.tool_use_id", "must be a non-empty string")
    if block.get("is_error"):
        losses.note(f"{path}.is_error", "OpenAI tool messages have no error flag, dropped")
    content = block.get("content")
    if content is None:
        content = ""
    elif not isinstance(content, str):
        content = _text_parts(content, f"{path}.content", losses)
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def _assistant(content: Any, path: str, losses: Losses) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant"}
    if isinstance(content, str):
        message["content"] = content
        return message
    if not isinstance(content, list):
        raise MalformedPayload(path, "must be a string or a list of blocks")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        block_path = f"{path}[{index}]"
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text":
            _note_extras(block, block_path, losses)
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append({"id": str(block.get("id")), "type": "function",
                          "function": {"name": str(block.get("name")),
                                       "arguments": _compact_json(block.get("input", {}))}})
        elif kind in ("thinking", "redacted_thinking"):
            losses.note(block_path, "thinking blocks have no OpenAI equivalent, dropped")
        else:
            raise Untranslatable(block_path, "this content block cannot be translated to OpenAI")
    message["content"] = "".join(texts) if texts else None
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(body: Mapping[str, Any], out: dict[str, Any], losses: Losses) -> None:
    """Tools and the choice among them; a choice without tools is dropped (OpenAI refuses it)."""
    tools = body.get("tools")
    tools = [_tool(tool, f"tools[{index}]") for index, tool in enumerate(tools)] if isinstance(tools, list) else []
    choice = body.get("tool_choice")
    if not isinstance(choice, Mapping):
        if tools:
            out["tools"] = tools
        return
    kind = choice.get("type")
    if kind == "auto":
        openai_choice: Any = "auto"
    elif kind == "any":
        openai_choice = "required"
    elif kind == "none":
        openai_choice = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        openai_choice = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise Untranslatable("tool_choice", "an unknown tool_choice cannot be translated")
    if not tools:
        losses.note("tool_choice", "no tools to choose from, dropped")
        return
    out["tools"] = tools
    out["tool_choice"] = openai_choice
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False


def _tool(tool: Any, path: str) -> dict[str, Any]:
    if not isinstance(tool, Mapping) or tool.get("type", "custom") != "custom":
        raise Untranslatable(path, "Anthropic server tools cannot be translated to OpenAI")
    if not isinstance(tool.get("name"), str):
        raise MalformedPayload(f"{path}.name", "must be a string")
    function: dict[str, Any] = {"name": tool["name"]}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
