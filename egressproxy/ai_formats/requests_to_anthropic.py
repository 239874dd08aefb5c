"""An OpenAI Chat Completions request -> an Anthropic Messages request.

What maps (OpenAI -> Anthropic):
- `system` and `developer` messages -> top-level `system` (one string message stays a string, otherwise text
  blocks in order; a system message after the conversation started moves to the top, noted as a loss);
- `user` content: a string stays a string; parts: `text` -> text block, `image_url` -> image block (a
  `data:` URL of jpeg/png/gif/webp -> base64 source, an http(s) URL -> url source; `detail` is dropped);
- `assistant` text (and `refusal`) -> text blocks, `tool_calls` (and legacy `function_call`) -> `tool_use`
  blocks with the arguments parsed as JSON; `tool` (and legacy `function`) messages -> `tool_result` blocks in
  the next user turn; consecutive turns of one role merge into one (Anthropic wants them alternating);
- `max_completion_tokens`, else `max_tokens`, else 4096 (DESIGN.md 4.1) -> `max_tokens`;
- `temperature` (clamped to Anthropic's 0..1, noted), `top_p`, `stop` -> `stop_sequences`, `stream`;
- `tools` (and legacy `functions`) -> tools with `input_schema`; `tool_choice` (and `function_call`)
  none/auto/required/named -> none/auto/any/tool; `parallel_tool_calls: false` -> `disable_parallel_tool_use`;
- `user` -> `metadata.user_id`.

What refuses (`Untranslatable`): `n > 1`, `logprobs`/`top_logprobs`, a `response_format` other than text, audio
(`modalities`, `audio`, `input_audio` parts), `file` parts, images of other media types, tool call arguments
that are not a JSON object. Anything else OpenAI-only (penalties, `logit_bias`, `seed`, `service_tier`,
`store`, `metadata`, `reasoning_effort`, `prediction`, `web_search_options`, message `name`) is dropped and noted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from egressproxy.ai_formats.errors import MalformedPayload, Untranslatable
from egressproxy.ai_formats.translated import Losses, TranslatedRequest

__all__ = ["to_anthropic_request", "DEFAULT_MAX_TOKENS"]

DEFAULT_MAX_TOKENS = 4096  # DESIGN.md 4.1: Anthropic requires max_tokens; OpenAI clients often send none

_DROPPED = (
    "frequency_penalty", "presence_penalty", "logit_bias", "seed", "service_tier", "store", "metadata",
    "reasoning_effort", "prediction", "web_search_options", "verbosity", "prompt_cache_key", "safety_identifier",
)
_KNOWN = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "stream",
     "stream_options", "tools", "functions", "tool_choice", "function_call", "parallel_tool_calls", "user", "n",
     "logprobs", "top_logprobs", "response_format", "modalities", "audio", *_DROPPED}
)
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def to_anthropic_request(body: Mapping[str, Any], model: str) -> TranslatedRequest:
    """Translate `body` (a parsed OpenAI chat request) for Anthropic, addressed to `model`."""
    losses = Losses()
    _refuse_inexpressible(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise MalformedPayload("messages", "must be a non-empty list")
    system, turns = _conversation(messages, losses)
    if not turns:
        raise Untranslatable("messages", "Anthropic needs at least one user or assistant message")
    out: dict[str, Any] = {"model": model, "max_tokens": _max_tokens(body)}
    if system is not None:
        out["system"] = system
    out["messages"] = turns
    _sampling(body, out, losses)
    _tools(body, out, losses)
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    stream = body.get("stream") is True
    if stream:
        out["stream"] = True
    for key in body:
        if key in _DROPPED or key not in _KNOWN:
            losses.note(key, "no Anthropic equivalent, dropped")
    options = body.get("stream_options")
    include_usage = stream and isinstance(options, Mapping) and options.get("include_usage") is True
    return TranslatedRequest(out, stream, include_usage, tuple(losses.notes))


def _refuse_inexpressible(body: Mapping[str, Any]) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise Untranslatable("n", "Anthropic returns one choice per request; n > 1 cannot be translated")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise Untranslatable("logprobs", "Anthropic does not return log probabilities")
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type", "text") != "text":
        raise Untranslatable("response_format", "structured output formats cannot be translated to Anthropic")
    modalities = body.get("modalities")
    if body.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
        raise Untranslatable("audio", "Anthropic has no audio output")


def _max_tokens(body: Mapping[str, Any]) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return DEFAULT_MAX_TOKENS


def _sampling(body: Mapping[str, Any], out: dict[str, Any], losses: Losses) -> None:
    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        if temperature > 1:
            losses.note("temperature", "above Anthropic's maximum of 1, clamped")
        out["temperature"] = min(temperature, 1)
    top_p = body.get("top_p")
    if isinstance(top_p, (int, float)) and not isinstance(top_p, bool):
        out["top_p"] = top_p
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = [s for s in stop if isinstance(s, str)]


# --- the conversation ---------------------------------------------------------------------------------------


def _conversation(messages: list[Any], losses: Losses) -> tuple[Any, list[dict[str, Any]]]:
    """(`system`, alternating turns) from OpenAI's flat message list."""
    system: list[dict[str, Any]] = []
    system_strings = 0
    turns: list[dict[str, Any]] = []
    legacy_ids: dict[str, str] = {}  # function name -> the id given to its legacy function_call
    for index, message in enumerate(messages):
        path = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise MalformedPayload(path, "must be an object")
        role = message.get("role")
        if "name" in message and role != "function":
            losses.note(f"{path}.name", "Anthropic messages carry no participant name, dropped")
        if role in ("system", "developer"):
            if turns:
                losses.note(path, "a system message inside the conversation moved to the top-level system")
            system_strings += isinstance(message.get("content"), str)
            system.extend(_text_blocks(message.get("content"), f"{path}.content"))
        elif role == "user":
            _append(turns, "user", _user_content(message.get("content"), f"{path}.content"))
        elif role == "assistant":
            blocks = _assistant_blocks(message, path, legacy_ids)
            if blocks:
                _append(turns, "assistant", _plain_text(blocks, message.get("content")))
            else:
                losses.note(path, "an assistant message without content or tool calls, dropped")
        elif role == "tool":
            _append(turns, "user", [_tool_result(message.get("tool_call_id"), message.get("content"), path)])
        elif role == "function":
            call_id = legacy_ids.get(str(message.get("name")), f"call_{index}")
            _append(turns, "user", [_tool_result(call_id, message.get("content"), path)])
        else:
            raise MalformedPayload(f"{path}.role", "unknown role")
    return _system_value(system, system_strings), turns


def _system_value(blocks: list[dict[str, Any]], strings: int) -> Any:
    if not blocks:
        return None
    if len(blocks) == 1 and strings == 1:
        return blocks[0]["text"]
    return blocks


def _append(turns: list[dict[str, Any]], role: str, content: Any) -> None:
    """Add a turn, merging it into the previous one of the same role (tool results stay first in a user turn)."""
    if turns and turns[-1]["role"] == role:
        previous = turns[-1]
        merged = _as_blocks(previous["content"]) + _as_blocks(content)
        if role == "user":
            merged.sort(key=lambda block: block.get("type") != "tool_result")  # stable: order kept otherwise
        previous["content"] = merged
        return
    turns.append({"role": role, "content": content})


def _as_blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _text_blocks(content: Any, path: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise MalformedPayload(path, "must be a string or a list of parts")
    blocks = []
    for index, part in enumerate(content):
        if not isinstance(part, Mapping) or part.get("type") not in ("text", "refusal"):
            raise Untranslatable(f"{path}[{index}]", "only text parts can be translated here")
        blocks.append({"type": "text", "text": str(part.get("text", part.get("refusal", "")))})
    return blocks


def _user_content(content: Any, path: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise MalformedPayload(path, "must be a string or a list of parts")
    return [_user_part(part, f"{path}[{index}]") for index, part in enumerate(content)]


def _user_part(part: Any, path: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind == "text":
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        if not isinstance(url, str):
            raise MalformedPayload(f"{path}.image_url.url", "must be a string")
        return {"type": "image", "source": _image_source(url, f"{path}.image_url.url")}
    if kind in ("input_audio", "file"):
        raise Untranslatable(path, f"{kind} parts cannot be translated to Anthropic")
    raise Untranslatable(path, "unknown content part type")


def _image_source(url: str, path: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or encoding != "base64":
            raise Untranslatable(path, "only base64 data URLs can be translated")
        if media_type not in _IMAGE_TYPES:
            raise Untranslatable(path, "Anthropic accepts jpeg, png, gif and webp images only")
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    raise Untranslatable(path, "an image URL must be a data: or http(s) URL")


def _assistant_blocks(message: Mapping[str, Any], path: str, legacy_ids: dict[str, str]) -> list[dict[str, Any]]:
    content = message.get("content")
    blocks = [] if content is None else _text_blocks(content, f"{path}.content")
    blocks = [block for block in blocks if block["text"]]  # Anthropic rejects empty text blocks
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        blocks.append({"type": "text", "text": refusal})
    calls = message.get("tool_calls")
    for index, call in enumerate(calls if isinstance(calls, list) else []):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            raise MalformedPayload(f"{path}.tool_calls[{index}]", "must name a function")
        arguments = _arguments(function.get("arguments"), f"{path}.tool_calls[{index}].function.arguments")
        blocks.append({"type": "tool_use", "id": str(call.get("id")), "name": str(function.get("name")),
                       "input": arguments})
    legacy = message.get("function_call")
    if isinstance(legacy, Mapping):
        name = str(legacy.get("name"))
        call_id = f"call_{path}".replace("[", "_").replace("]", "")  # legacy calls have no id: make one up
        legacy_ids[name] = call_id
        blocks.append({"type": "tool_use", "id": call_id, "name": name,
                       "input": _arguments(legacy.get("arguments"), f"{path}.function_call.arguments")})
    return blocks


def _plain_text(blocks: list[dict[str, Any]], content: Any) -> Any:
    """An answer that was a plain string stays one (both APIs take a string for a text-only turn)."""
    if isinstance(content, str) and blocks == [{"type": "text", "text": content}]:
        return content
    return blocks


def _arguments(raw: Any, path: str) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise Untranslatable(path, "tool call arguments are not JSON") from None
    if not isinstance(value, dict):
        raise Untranslatable(path, "tool call arguments must be a JSON object for Anthropic")
    return value


def _tool_result(call_id: Any, content: Any, path: str) -> dict[str, Any]:
    if not isinstance(call_id, str) or not call_id:
        raise MalformedPayload(f"{path}.tool_call_id", "must be a non-empty string")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if isinstance(content, str):
        result["content"] = content
    elif content is not None:
        result["content"] = _text_blocks(content, f"{path}.content")
    return result


# --- tools ------------------------------------------------------------------------------------------------


def _tools(body: Mapping[str, Any], out: dict[str, Any], losses: Losses) -> None:
    """Tools and the choice among them; a choice without tools is dropped (Anthropic refuses it)."""
    tools = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(_list(body.get("tools")))]
    tools += [_function(f, f"functions[{i}]") for i, f in enumerate(_list(body.get("functions")))]
    choice = _tool_choice(body.get("tool_choice", body.get("function_call")))
    if not tools:
        if choice is not None:
            losses.note("tool_choice", "no tools to choose from, dropped")
        return
    out["tools"] = tools
    if body.get("parallel_tool_calls") is False:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice is not None:
        out["tool_choice"] = choice


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _tool(tool: Any, path: str) -> dict[str, Any]:
    if not isinstance(tool, Mapping) or tool.get("type", "function") != "function":
        raise Untranslatable(path, "only function tools can be translated to Anthropic")
    return _function(tool.get("function"), f"{path}.function")


def _function(function: Any, path: str) -> dict[str, Any]:
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise MalformedPayload(path, "must be an object with a name")
    tool: dict[str, Any] = {"name": function["name"]}
    if isinstance(function.get("description"), str):
        tool["description"] = function["description"]
    parameters = function.get("parameters")
    tool["input_schema"] = parameters if isinstance(parameters, Mapping) else {"type": "object", "properties": {}}
    return tool


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "none":
        return {"type": "none"}
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, Mapping):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else choice.get("name")
        if isinstance(name, str):
            return {"type": "tool", "name": name}
    raise Untranslatable("tool_choice", "an unknown tool_choice cannot be translated")
