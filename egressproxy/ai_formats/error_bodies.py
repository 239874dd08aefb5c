"""Error bodies, both ways: OpenAI `{"error": {message, type, param, code}}` <-> Anthropic `{"type": "error",
"error": {type, message}}`; the refusal to translate, in the client's format; and the stream error event.

The HTTP status is kept as the provider sent it (both SDKs read the status first); the error `type` is chosen
from the status when it is one both APIs name, else from the provider's type, else `api_error`/`server_error`.
Going to OpenAI, `code` carries Anthropic's own type (`overloaded_error`), so nothing the client could act on is
lost. The provider's `message` passes unchanged: both providers write messages meant for the caller (OpenAI masks
all but the last characters of a wrong key itself); a body that is not an error JSON becomes a generic message
naming only the status, never the body's text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from egressproxy.ai_formats.errors import TranslationError
from egressproxy.ai_formats.formats import ApiFormat
from egressproxy.ai_formats.sse import encode_event

__all__ = ["to_anthropic_error", "to_openai_error", "translate_error", "refusal_body", "stream_error_event",
           "REFUSAL_STATUS"]

REFUSAL_STATUS = 400  # a request the other format cannot express is the client's to change, like any 400

_ANTHROPIC_BY_STATUS = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 503: "overloaded_error",
    529: "overloaded_error",
}
_ANTHROPIC_BY_OPENAI_TYPE = {
    "invalid_request_error": "invalid_request_error", "authentication_error": "authentication_error",
    "permission_error": "permission_error", "not_found_error": "not_found_error",
    "insufficient_quota": "rate_limit_error", "rate_limit_exceeded": "rate_limit_error",
    "requests": "rate_limit_error", "tokens": "rate_limit_error", "server_error": "api_error",
}
_OPENAI_BY_ANTHROPIC_TYPE = {
    "invalid_request_error": "invalid_request_error", "authentication_error": "authentication_error",
    "permission_error": "permission_error", "not_found_error": "not_found_error",
    "request_too_large": "invalid_request_error", "rate_limit_error": "rate_limit_exceeded",
    "api_error": "server_error", "overloaded_error": "server_error", "timeout_error": "server_error",
    "billing_error": "insufficient_quota",
}


def to_anthropic_error(body: Any, status: int | None) -> dict[str, Any]:
    """Any provider error body (parsed OpenAI JSON, or anything else) -> an Anthropic error body."""
    error = body.get("error") if isinstance(body, Mapping) else None
    error = error if isinstance(error, Mapping) else {}
    kind = _ANTHROPIC_BY_STATUS.get(status or 0) or _ANTHROPIC_BY_OPENAI_TYPE.get(str(error.get("type")))
    if kind is None:
        kind = "invalid_request_error" if status is not None and 400 <= status < 500 else "api_error"
    return {"type": "error", "error": {"type": kind, "message": _message(error, status)}}


def to_openai_error(body: Any, status: int | None) -> dict[str, Any]:
    """Any provider error body (parsed Anthropic JSON, or anything else) -> an OpenAI error body."""
    error = body.get("error") if isinstance(body, Mapping) else None
    error = error if isinstance(error, Mapping) else {}
    anthropic_type = error.get("type")
    if not isinstance(anthropic_type, str):
        anthropic_type = _ANTHROPIC_BY_STATUS.get(status or 0, "api_error")
    kind = _OPENAI_BY_ANTHROPIC_TYPE.get(anthropic_type, "server_error")
    return {"error": {"message": _message(error, status), "type": kind, "param": None, "code": anthropic_type}}


def translate_error(body: bytes, status: int, target: ApiFormat) -> bytes:
    """A provider's error response body, as the client's format writes it (same status)."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = None
    translated = to_anthropic_error(parsed, status) if target is ApiFormat.ANTHROPIC_MESSAGES else \
        to_openai_error(parsed, status)
    return json.dumps(translated, separators=(",", ":")).encode()


def refusal_body(error: TranslationError, client_format: ApiFormat) -> bytes:
    """The 400 body (`REFUSAL_STATUS`) telling the client its request cannot go to the fallback's format."""
    message = f"the request cannot be translated to the fallback provider's format: {error}"
    if client_format is ApiFormat.ANTHROPIC_MESSAGES:
        body: dict[str, Any] = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    else:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": error.field or None,
                          "code": "untranslatable_request"}}
    return json.dumps(body, separators=(",", ":")).encode()


def stream_error_event(client_format: ApiFormat, message: str, kind: str = "api_error") -> bytes:
    """An SSE error event in the client's format (`kind` is an Anthropic error type). OpenAI streams carry an
    error as a `data:` line holding an error body, which its SDKs raise as an APIError."""
    anthropic = {"type": "error", "error": {"type": kind, "message": message}}
    if client_format is ApiFormat.ANTHROPIC_MESSAGES:
        return encode_event(anthropic, "error")
    return encode_event(to_openai_error(anthropic, None))


def _message(error: Mapping[str, Any], status: int | None) -> str:
    message = error.get("message")
    if isinstance(message, str) and message:
        return message
    return f"the provider answered with status {status}" if status else "the provider reported an error"
