"""The text of chat requests and responses, in both formats the gateway knows (egressproxy/ai_formats/formats.py).

Guards read and rewrite message *text* only: an OpenAI message's `content` string or its `{"type": "text"}`
parts; an Anthropic message's `content` string or its `text` blocks, and the top-level `system` (string or text
blocks). Keys, roles, tool calls, images and every other field are never touched. Every message counts, the
system prompt and assistant turns included: a credit card pasted into an earlier turn is still sent again.

Responses: an OpenAI completion's `choices[].message.content`; an Anthropic message's `content[]` text blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from egressproxy.ai_formats.formats import ApiFormat
from egressproxy.prompt_guard import Enrichment, FieldDefault

__all__ = ["request_texts", "map_request_texts", "enrich", "apply_defaults", "map_response_texts"]

Slot = tuple[MutableMapping[Any, Any] | list[Any], Any]  # a container and the key or index of one text in it


def _content_slots(holder: MutableMapping[str, Any], key: str) -> Iterator[Slot]:
    content = holder.get(key)
    if isinstance(content, str):
        yield holder, key
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                yield part, "text"


def _request_slots(document: MutableMapping[str, Any], fmt: ApiFormat) -> Iterator[Slot]:
    if fmt is ApiFormat.ANTHROPIC_MESSAGES:
        yield from _content_slots(document, "system")
    for message in document.get("messages") or ():
        if isinstance(message, dict):
            yield from _content_slots(message, "content")


def request_texts(document: MutableMapping[str, Any], fmt: ApiFormat) -> Iterator[str]:
    """Every message text of a request, in order."""
    for holder, key in _request_slots(document, fmt):
        yield holder[key]


def map_request_texts(document: MutableMapping[str, Any], fmt: ApiFormat, change: Callable[[str], str]) -> bool:
    """Replace every message text by `change(text)`; True when any changed."""
    changed = False
    for holder, key in _request_slots(document, fmt):
        new = change(holder[key])
        if new != holder[key]:
            holder[key] = new
            changed = True
    return changed


def map_response_texts(document: Any, change: Callable[[str], str]) -> bool:
    """Replace the answer text of a non-streamed completion (either format); True when any changed."""
    if not isinstance(document, dict):
        return False
    slots: list[Slot] = []
    for choice in document.get("choices") or ():
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
            slots.extend(_content_slots(choice["message"], "content"))
    if isinstance(document.get("content"), list):
        slots.extend(_content_slots(document, "content"))
    changed = False
    for holder, key in slots:
        new = change(holder[key])
        if new != holder[key]:
            holder[key] = new
            changed = True
    return changed


def enrich(document: MutableMapping[str, Any], fmt: ApiFormat, enrichment: Enrichment) -> bool:
    """Add the prepend/append messages. Roles are lower-cased (kgateway's examples write SYSTEM and USER). For
    Anthropic a `system` message joins the top-level `system` (before or after what is there), since Messages
    has no system role; other roles go into `messages`."""
    messages = document.get("messages")
    if not isinstance(messages, list):
        return False
    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    for role, content in enrichment.prepend:
        if fmt is ApiFormat.ANTHROPIC_MESSAGES and role.lower() == "system":
            _join_system(document, content, first=True)
        else:
            before.append({"role": role.lower(), "content": content})
    for role, content in enrichment.append:
        if fmt is ApiFormat.ANTHROPIC_MESSAGES and role.lower() == "system":
            _join_system(document, content, first=False)
        else:
            after.append({"role": role.lower(), "content": content})
    document["messages"] = [*before, *messages, *after]
    return True


def _join_system(document: MutableMapping[str, Any], content: str, *, first: bool) -> None:
    system = document.get("system")
    if isinstance(system, list):
        block = {"type": "text", "text": content}
        document["system"] = [block, *system] if first else [*system, block]
    elif isinstance(system, str) and system:
        document["system"] = f"{content}\n\n{system}" if first else f"{system}\n\n{content}"
    else:
        document["system"] = content


def apply_defaults(document: MutableMapping[str, Any], defaults: tuple[FieldDefault, ...]) -> bool:
    """Set each field when absent (or always, with `override`); nested paths create the objects on the way. A
    path through a non-object value is left alone. True when anything changed."""
    changed = False
    for default in defaults:
        holder: Any = document
        for name in default.path[:-1]:
            if not isinstance(holder, dict):
                break
            holder = holder.setdefault(name, {})
        if not isinstance(holder, dict):
            continue
        last = default.path[-1]
        if (default.override or last not in holder) and holder.get(last, _ABSENT) != default.value:
            holder[last] = default.value
            changed = True
    return changed


_ABSENT = object()
