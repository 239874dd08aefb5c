"""Cross-format failover: which candidates of a walked request get a translated request, and which are skipped.

A failover walk may reach a provider that speaks another chat API than the client (an Anthropic fallback for an
OpenAI client, or the other way round). Once per request, before the walk, `candidate_formats` looks at the
client's format (egressproxy/ai_formats: path, else body shape) and at each candidate's, and gives:

- nothing for a candidate of the client's own format (the request goes as before: model and path rewritten);
- a `Translation` for an OpenAI <-> Anthropic candidate: the translated body, addressed to the candidate's
  configured `model` (Anthropic requests without `max_tokens` get 4096), its path (the provider's
  `pathOverride`, else the format's standard endpoint; the client's query belongs to the other API and is
  dropped), and what the answer is translated back with (egressproxy/upstream_hop.py);
- a skip reason for a candidate it cannot serve: the translator refuses the request (`Untranslatable`, e.g.
  OpenAI's `n > 1`), the provider has no `model` to address, the body is compressed or not a JSON object, or
  the provider speaks another API than these two (Gemini, Bedrock).

When the client's format cannot be told (not a chat request), nothing is translated and a candidate of another
format than the first candidate's is skipped, as before translation existed.

Reasons name fields, never values: no prompt text reaches a log line or the 503 body through them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from egressproxy.ai_formats import (
    ApiFormat,
    MalformedPayload,
    TranslationError,
    detect_format,
    path_for,
    translate_error,
    translate_request,
    translate_response,
)
from egressproxy.model_rewrite import configured_model
from egressproxy.provider_endpoints import provider_api
from egressproxy.snapshot import AIProvider
from egressproxy.upstreams import Upstream

__all__ = [
    "CandidateFormats",
    "Translation",
    "answer_headers",
    "api_format",
    "candidate_formats",
    "format_of",
    "skip_reason",
    "translate_answer",
    "translation_model",
]

# provider_api()'s names for the two formats the translator knows.
_TRANSLATABLE = {"openai": ApiFormat.OPENAI_CHAT, "anthropic": ApiFormat.ANTHROPIC_MESSAGES}


@dataclass(frozen=True, slots=True)
class Translation:
    """How one candidate is sent a request of the other format, and how its answer comes back."""

    client: ApiFormat  # the format the client speaks (and gets its answer in)
    provider: ApiFormat  # the format the candidate speaks
    path: str
    body: bytes
    stream: bool  # the client asked for a stream
    include_usage: bool  # an OpenAI client asked for the final usage chunk
    reported_model: str  # the model the client asked for, named in the translated answer
    losses: tuple[str, ...] = ()  # field paths the translation dropped (names only), for a debug line


# A candidate's entry: its translation, or why it is not tried. Candidates of the client's format are absent.
CandidateFormats = Mapping[Upstream, Translation | str]


def api_format(upstream: Upstream) -> str | None:
    """The request format a candidate speaks (`openai` for OpenAI-compatible ones); None: not an AI provider."""
    return provider_api(upstream.provider) if upstream.provider is not None else None


def format_of(upstream: Upstream) -> ApiFormat | None:
    """The translator's name for a candidate's format; None when it speaks neither chat API (or is no provider)."""
    api = api_format(upstream)
    return _TRANSLATABLE.get(api) if api is not None else None


def translation_model(provider: AIProvider | None) -> str | None:
    """The model a translated request is addressed to: the provider's configured `model`, for Azure OpenAI its
    `deploymentName` (the deployment is the model; Azure reads it from the path)."""
    model = configured_model(provider)
    if model is None and provider is not None and provider.kind == "azureOpenai":
        deployment = provider.config.get("deploymentName")
        model = deployment if isinstance(deployment, str) and deployment else None
    return model


def skip_reason(formats: CandidateFormats, upstream: Upstream) -> str | None:
    entry = formats.get(upstream)
    return entry if isinstance(entry, str) else None


def candidate_formats(path: str, body: bytes, content_encoding: str | None, candidates: Iterable[Upstream]) -> dict[Upstream, Translation | str]:
    """Each candidate's translation or skip reason, for one request (see the module docstring)."""
    unique = tuple(dict.fromkeys(candidates))
    if not unique:
        return {}
    document = _json_object(body) if not content_encoding else None
    client = detect_format(path, document) if document is not None else detect_format(path)
    out: dict[Upstream, Translation | str] = {}
    for candidate in unique:
        entry = _entry(candidate, unique[0], client, document, content_encoding)
        if entry is not None:
            out[candidate] = entry
    return out


def _entry(
    candidate: Upstream, first: Upstream, client: ApiFormat | None, document: dict[str, Any] | None, encoding: str | None
) -> Translation | str | None:
    offered = api_format(candidate)
    if offered is None:
        return None
    if client is None:
        wanted = api_format(first)
        if wanted is None or wanted == offered:
            return None
        return f"speaks the {offered} API and the request is not a chat request that can be translated"
    target = _TRANSLATABLE.get(offered)
    if target is client:
        return None
    if target is None:
        return f"speaks the {offered} API: translation covers the OpenAI and Anthropic chat APIs only"
    if encoding:
        return f"the request body is compressed ({encoding}): it cannot be translated to the {offered} API"
    if document is None:
        return f"the request body is not a JSON object: it cannot be translated to the {offered} API"
    model = translation_model(candidate.provider)
    if model is None:
        return f"speaks the {offered} API and sets no model: a translated request needs the provider's model"
    try:
        translated = translate_request(document, client, target, model)
    except TranslationError as e:  # names the field and why, never a value
        return f"the request cannot be translated to the {offered} API: {e}"
    asked = document.get("model")
    override = candidate.provider.path if candidate.provider is not None else None
    return Translation(
        client=client,
        provider=target,
        path=override or path_for(target),
        body=json.dumps(translated.body, ensure_ascii=False, separators=(",", ":")).encode(),
        stream=translated.stream,
        include_usage=translated.include_usage,
        reported_model=asked if isinstance(asked, str) and asked else model,
        losses=translated.losses,
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


# The answer's own framing and encoding describe the provider's body, not the translated one.
_ANSWER_DROPPED = frozenset({"content-length", "content-encoding", "content-type"})


def answer_headers(headers: Iterable[tuple[str, str]], content_type: str) -> list[tuple[str, str]]:
    """The provider's response headers for a translated answer (rate-limit and request-id headers kept)."""
    kept = [(k, v) for k, v in headers if k.lower() not in _ANSWER_DROPPED]
    return [*kept, ("content-type", content_type)]


def translate_answer(translation: Translation, status: int, body: bytes) -> bytes:
    """A whole (not streamed) provider answer in the client's format: a success through `translate_response`
    (raises `MalformedPayload` when it is not the provider's format), anything else as an error body."""
    if not 200 <= status < 300:
        return translate_error(body, status, translation.client)
    try:
        document = json.loads(body)
    except ValueError:
        raise MalformedPayload("", "the provider's answer is not JSON") from None
    if not isinstance(document, dict):
        raise MalformedPayload("", "the provider's answer is not a JSON object")
    translated = translate_response(document, translation.provider, translation.client, translation.reported_model)
    return json.dumps(translated, ensure_ascii=False, separators=(",", ":")).encode()
