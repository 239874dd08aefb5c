"""Translation between OpenAI Chat Completions and Anthropic Messages, so a client always sees the format it
asked for when failover sends its request to a provider speaking the other one.

A pure library (no mitmproxy, no I/O): the failover code detects the client's format (`detect_format`),
translates the request for the candidate's format with the candidate's model (`translate_request`, which raises
`Untranslatable` for what the target cannot express: answer the client `REFUSAL_STATUS` with `refusal_body`),
and translates the answer back: a JSON body with `translate_response`, an error with `translate_error`, an SSE
body through the state machine `stream_translator` returns (see `streams` for its contract, cut streams
included). Responses report the model the client asked for. docs/ai-providers.md lists what maps, what is
dropped and what refuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from egressproxy.ai_formats.error_bodies import REFUSAL_STATUS, refusal_body, stream_error_event, translate_error
from egressproxy.ai_formats.errors import MalformedPayload, TranslationError, Untranslatable
from egressproxy.ai_formats.formats import ApiFormat, detect_format, path_for
from egressproxy.ai_formats.requests_to_anthropic import DEFAULT_MAX_TOKENS, to_anthropic_request
from egressproxy.ai_formats.requests_to_openai import to_openai_request
from egressproxy.ai_formats.responses import to_anthropic_response, to_openai_response
from egressproxy.ai_formats.stream_to_anthropic import OpenAIToAnthropicStream
from egressproxy.ai_formats.stream_to_openai import AnthropicToOpenAIStream
from egressproxy.ai_formats.streams import StreamOutcome, StreamTranslator
from egressproxy.ai_formats.translated import TranslatedRequest

__all__ = [
    "ApiFormat",
    "AnthropicToOpenAIStream",
    "DEFAULT_MAX_TOKENS",
    "MalformedPayload",
    "OpenAIToAnthropicStream",
    "REFUSAL_STATUS",
    "StreamOutcome",
    "StreamTranslator",
    "TranslatedRequest",
    "TranslationError",
    "Untranslatable",
    "detect_format",
    "path_for",
    "refusal_body",
    "stream_error_event",
    "stream_translator",
    "translate_error",
    "translate_request",
    "translate_response",
]


def translate_request(body: Mapping[str, Any], client: ApiFormat, provider: ApiFormat, model: str) -> TranslatedRequest:
    """The client's request for a provider of format `provider`, addressed to `model` (same format: only the
    model is replaced)."""
    if client is provider:
        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = stream and isinstance(options, Mapping) and options.get("include_usage") is True
        return TranslatedRequest({**body, "model": model}, stream, include_usage)
    if provider is ApiFormat.ANTHROPIC_MESSAGES:
        return to_anthropic_request(body, model)
    return to_openai_request(body, model)


def translate_response(
    body: Mapping[str, Any], provider: ApiFormat, client: ApiFormat, reported_model: str
) -> dict[str, Any]:
    """A provider's successful JSON response in the client's format, naming `reported_model`."""
    if provider is client:
        return dict(body)
    if client is ApiFormat.ANTHROPIC_MESSAGES:
        return to_anthropic_response(body, reported_model)
    return to_openai_response(body, reported_model)


def stream_translator(
    provider: ApiFormat, client: ApiFormat, reported_model: str, include_usage: bool = False
) -> StreamTranslator:
    """The state machine turning the provider's SSE body into the client's (the formats must differ)."""
    if provider is client:
        raise ValueError("a stream in the client's own format needs no translation")
    if client is ApiFormat.OPENAI_CHAT:
        return AnthropicToOpenAIStream(reported_model, include_usage=include_usage)
    return OpenAIToAnthropicStream(reported_model)
