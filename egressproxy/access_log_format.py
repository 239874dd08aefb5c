"""Access log formats in Envoy's command-operator language, compiled once per snapshot (DESIGN.md 4.2).

A format is compiled into a tree of `Part`s when the snapshot is built; writing a line only evaluates it
against a `FinishedRequest`. An operator this module does not know is a validation problem (never a silently
empty field). The operators, as Envoy spells them:

| operator | value |
| --- | --- |
| `%START_TIME%`, `%START_TIME(FMT)%` | request start, ISO 8601 UTC with milliseconds; FMT: strftime, `%s` epoch seconds |
| `%REQ(H)%`, `%REQ(H?ALT)%`, `%REQ(H):N%` | a request header as the client sent it (`:method`, `:path`, `:authority`, `:scheme` too); `?ALT` fallback header; `:N` cut to N characters |
| `%RESP(H)%` | a response header (same forms) |
| `%RESPONSE_CODE%` | status (0 when no response was sent) |
| `%RESPONSE_CODE_DETAILS%` | the denial or error reason (`no-route`, `upstream-timeout`, ...) |
| `%RESPONSE_FLAGS%` | Envoy's flags where one fits: `UF`, `UT`, `UR`, `UPE`, `UH`, `RL`, `UAEX`, else `-` |
| `%DURATION%` | milliseconds from request to the end of the response |
| `%BYTES_RECEIVED%`, `%BYTES_SENT%` | request / response body bytes |
| `%PROTOCOL%` | `HTTP/1.1`, `HTTP/2.0`, ... |
| `%UPSTREAM_HOST%` | the address dialled, `ip:port` |
| `%UPSTREAM_CLUSTER%` | the backend (`namespace/name`) |
| `%ROUTE_NAME%` | the route (`namespace/name`) |
| `%DOWNSTREAM_REMOTE_ADDRESS%`, `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%` | the client |
| `%REQUESTED_SERVER_NAME%` | the TLS SNI |
| `%HOSTNAME%` | this machine's hostname |
| `%TRACE_ID%` | the request's trace id when traced |
| `%EGRESS_GATEWAY%`, `%EGRESS_LISTENER%`, `%EGRESS_IDENTITY%`, `%EGRESS_DECISION%`, `%EGRESS_POLICY%`, `%GEN_AI_PROVIDER_NAME%`, `%GEN_AI_REQUEST_MODEL%`, `%GEN_AI_USAGE_INPUT_TOKENS%`, `%GEN_AI_USAGE_OUTPUT_TOKENS%` | egressproxy extensions |

A value that is missing prints `-` in a text line and `null` in JSON; a JSON value that is exactly one
numeric operator is a number. Credential-bearing headers print `<redacted>`, whatever the format asks.
"""

from __future__ import annotations

import datetime
import json
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from egressproxy.flowrecord import FinishedRequest, HeaderFields

__all__ = [
    "REDACTED",
    "DEFAULT_REDACTED_HEADERS",
    "DEFAULT_JSON_FORMAT",
    "OTLP_ATTRIBUTES_FORMAT",
    "DEFAULT_REDACTED_QUERY",
    "redact_path",
    "FormatError",
    "LogFormat",
    "compile_json_format",
    "compile_text_format",
]

REDACTED = "<redacted>"
# Always redacted in a printed header (DESIGN.md 4.1's credential headers); the compiler adds every header a
# configured credential is injected into.
DEFAULT_REDACTED_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie", "set-cookie"}
)
DEFAULT_JSON_FORMAT: Mapping[str, str] = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "duration": "%DURATION%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "upstream_host": "%UPSTREAM_HOST%",
    "route": "%ROUTE_NAME%",
    "backend": "%UPSTREAM_CLUSTER%",
    "identity": "%EGRESS_IDENTITY%",
    "decision": "%EGRESS_DECISION%",
    "policy": "%EGRESS_POLICY%",
}
# The attributes of an access log exported as an OTLP log record (the seeds' `otel` sink has no format of its
# own): OpenTelemetry HTTP and GenAI semantic-convention names, and egressproxy's under `egress.`.
OTLP_ATTRIBUTES_FORMAT: Mapping[str, str] = {
    "http.request.method": "%REQ(:METHOD)%",
    "url.path": "%REQ(:PATH)%",
    "url.scheme": "%REQ(:SCHEME)%",
    "server.address": "%REQ(:AUTHORITY)%",
    "http.response.status_code": "%RESPONSE_CODE%",
    "http.request.body.size": "%BYTES_RECEIVED%",
    "http.response.body.size": "%BYTES_SENT%",
    "network.protocol.name": "%PROTOCOL%",
    "client.address": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "egress.duration_ms": "%DURATION%",
    "egress.upstream_host": "%UPSTREAM_HOST%",
    "egress.gateway": "%EGRESS_GATEWAY%",
    "egress.listener": "%EGRESS_LISTENER%",
    "egress.route": "%ROUTE_NAME%",
    "egress.backend": "%UPSTREAM_CLUSTER%",
    "egress.identity": "%EGRESS_IDENTITY%",
    "egress.decision": "%EGRESS_DECISION%",
    "egress.reason": "%RESPONSE_CODE_DETAILS%",
    "egress.policy": "%EGRESS_POLICY%",
    "gen_ai.provider.name": "%GEN_AI_PROVIDER_NAME%",
    "gen_ai.request.model": "%GEN_AI_REQUEST_MODEL%",
    "gen_ai.usage.input_tokens": "%GEN_AI_USAGE_INPUT_TOKENS%",
    "gen_ai.usage.output_tokens": "%GEN_AI_USAGE_OUTPUT_TOKENS%",
}
DEFAULT_TEXT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% '
    '%BYTES_RECEIVED% %BYTES_SENT% %DURATION% "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %EGRESS_IDENTITY%\n'
)

_OPERATOR = re.compile(r"%([A-Z_]+)(?:\(([^)]*)\))?(?::(\d+))?%")
Value = str | int | None
Getter = Callable[[FinishedRequest], Value]


class FormatError(ValueError):
    """A format this build cannot print: the message names the operator."""


# Query parameters that carry a credential (a workload's own `key`, or one the gateway injects): redacted in a
# printed path. The compiler adds the names configured credentials set.
DEFAULT_REDACTED_QUERY = frozenset({"key"})


@dataclass(frozen=True, slots=True)
class Context:
    redacted: frozenset[str]
    redacted_query: frozenset[str] = DEFAULT_REDACTED_QUERY


def redact_path(path: str, names: frozenset[str]) -> str:
    """`path` with the value of every query parameter in `names` replaced by `<redacted>`."""
    base, sep, query = path.partition("?")
    if not sep or not names:
        return path
    parts = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        parts.append(f"{name}={REDACTED}" if eq and name.lower() in names else item)
    return f"{base}?{'&'.join(parts)}"


def _header(fields: HeaderFields, names: tuple[str, ...], redacted: frozenset[str]) -> str | None:
    for name in names:
        wanted = name.encode("latin-1")
        for key, value in fields:
            if key.lower() == wanted:
                return REDACTED if name in redacted else value.decode("latin-1")
    return None


_PSEUDO: dict[str, Getter] = {
    ":method": lambda r: r.method,
    ":authority": lambda r: (r.exchange.authority if r.exchange else None) or r.host,
    ":scheme": lambda r: r.exchange.scheme if r.exchange else None,
}


def _req(argument: str, ctx: Context, response: bool) -> Getter:
    names = tuple(n.strip().lower() for n in argument.split("?"))
    if not argument or not all(names) or len(names) > 2:
        raise FormatError(f"%{'RESP' if response else 'REQ'}({argument})% needs one header name (or NAME?ALT)")
    if not response and names[0] == ":path":
        query = ctx.redacted_query
        return lambda r: redact_path(r.exchange.path, query) if r.exchange else None
    if not response and names[0] in _PSEUDO:
        return _PSEUDO[names[0]]
    redacted = ctx.redacted

    def get(record: FinishedRequest) -> Value:
        if record.exchange is None:
            return None
        fields = record.exchange.response_headers if response else record.exchange.request_headers
        return _header(fields, names, redacted)

    return get


def _start_time(argument: str) -> Getter:
    if not argument:
        return lambda r: datetime.datetime.fromtimestamp(r.started, datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if argument == "%s":
        return lambda r: str(int(r.started))
    return lambda r: datetime.datetime.fromtimestamp(r.started, datetime.UTC).strftime(argument)


_FLAGS = {
    "upstream-unreachable": "UF",
    "upstream-tls-invalid": "UF",
    "upstream-timeout": "UT",
    "upstream-reset": "UR",  # Envoy's UpstreamRemoteReset: the response broke after its headers
    "upstream-protocol-error": "UPE",  # Envoy's UpstreamProtocolError: a body that cannot be parsed
    "no-healthy-backend": "UH",
    "rate-limited": "RL",
    "ext-auth-denied": "UAEX",
}


def _flags(record: FinishedRequest) -> str:
    reason = record.error or (record.verdict.reason if record.verdict is not None and not record.verdict.allowed else "")
    return _FLAGS.get(reason, "-")


def _details(record: FinishedRequest) -> Value:
    if record.error:
        return record.error
    if record.verdict is not None and not record.verdict.allowed:
        return record.verdict.reason
    return None


def _client_without_port(record: FinishedRequest) -> Value:
    address = record.exchange.client_address if record.exchange else None
    if not address:
        return None
    host = address.rpartition(":")[0]
    return host.strip("[]")


_HOSTNAME = socket.gethostname()

# operator -> (getter, numeric)
_PLAIN: dict[str, tuple[Getter, bool]] = {
    "RESPONSE_CODE": (lambda r: r.status or 0, True),
    "RESPONSE_CODE_DETAILS": (_details, False),
    "RESPONSE_FLAGS": (_flags, False),
    "DURATION": (lambda r: int(r.duration * 1000), True),
    "BYTES_RECEIVED": (lambda r: r.exchange.bytes_received if r.exchange else 0, True),
    "BYTES_SENT": (lambda r: r.exchange.bytes_sent if r.exchange else 0, True),
    "PROTOCOL": (lambda r: r.exchange.protocol if r.exchange else None, False),
    "UPSTREAM_HOST": (lambda r: r.exchange.upstream_address if r.exchange else None, False),
    "UPSTREAM_CLUSTER": (lambda r: r.backend, False),
    "ROUTE_NAME": (lambda r: r.route, False),
    "DOWNSTREAM_REMOTE_ADDRESS": (lambda r: r.exchange.client_address if r.exchange else None, False),
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": (_client_without_port, False),
    "REQUESTED_SERVER_NAME": (lambda r: r.sni, False),
    "HOSTNAME": (lambda r: _HOSTNAME, False),
    "TRACE_ID": (lambda r: r.exchange.trace_id if r.exchange else None, False),
    "EGRESS_GATEWAY": (lambda r: r.gateway, False),
    "EGRESS_LISTENER": (lambda r: r.listener, False),
    "EGRESS_IDENTITY": (lambda r: str(r.identity), False),
    "EGRESS_DECISION": (lambda r: r.decision, False),
    "EGRESS_POLICY": (lambda r: r.verdict.policy or None if r.verdict is not None else None, False),
    "GEN_AI_PROVIDER_NAME": (lambda r: r.gen_ai.provider if r.gen_ai else None, False),
    "GEN_AI_REQUEST_MODEL": (lambda r: r.gen_ai.request_model if r.gen_ai else None, False),
    "GEN_AI_USAGE_INPUT_TOKENS": (lambda r: r.gen_ai.input_tokens if r.gen_ai and r.gen_ai.reported else None, True),
    "GEN_AI_USAGE_OUTPUT_TOKENS": (lambda r: r.gen_ai.output_tokens if r.gen_ai and r.gen_ai.reported else None, True),
}
SUPPORTED_OPERATORS = ("START_TIME", "REQ", "RESP", *_PLAIN)


@dataclass(frozen=True, slots=True)
class _Operator:
    get: Getter
    numeric: bool
    limit: int | None

    def value(self, record: FinishedRequest) -> Value:
        value = self.get(record)
        if self.limit is not None and isinstance(value, str):
            value = value[: self.limit]
        return value


def _operator(name: str, argument: str | None, limit: str | None, ctx: Context) -> _Operator:
    cut = int(limit) if limit else None
    if name in ("REQ", "RESP"):
        return _Operator(_req(argument or "", ctx, name == "RESP"), False, cut)
    if name == "START_TIME":
        return _Operator(_start_time(argument or ""), False, cut)
    if name in _PLAIN:
        if argument is not None:
            raise FormatError(f"%{name}% takes no argument")
        getter, numeric = _PLAIN[name]
        return _Operator(getter, numeric, cut)
    raise FormatError(f"unknown command operator %{name}% (supported: {', '.join(SUPPORTED_OPERATORS)})")


@dataclass(frozen=True, slots=True)
class _Template:
    """Literal text and operators; a template that is one operator keeps that operator's type."""

    pieces: tuple[str | _Operator, ...]

    def value(self, record: FinishedRequest, text: bool) -> Value:
        if len(self.pieces) == 1 and isinstance(self.pieces[0], _Operator):
            op = self.pieces[0]
            value = op.value(record)
            if text:
                return "-" if value is None else str(value)
            return value
        out = []
        for piece in self.pieces:
            if isinstance(piece, str):
                out.append(piece)
            else:
                value = piece.value(record)
                out.append("-" if value is None else str(value))
        return "".join(out)


def _template(text: str, ctx: Context) -> _Template:
    pieces: list[str | _Operator] = []
    position = 0
    for match in _OPERATOR.finditer(text):
        if match.start() > position:
            pieces.append(text[position : match.start()])
        pieces.append(_operator(match.group(1), match.group(2), match.group(3), ctx))
        position = match.end()
    if position < len(text):
        pieces.append(text[position:])
    leftover = "".join(p for p in pieces if isinstance(p, str))
    if re.search(r"%[A-Z_]+(\(|%)", leftover):
        raise FormatError(f"malformed command operator in {text!r}")
    return _Template(tuple(pieces))


@dataclass(frozen=True, slots=True)
class LogFormat:
    """A compiled format: `line(record)` is one access-log line (without its newline)."""

    json_fields: Mapping[str, Any] | None  # nested keys -> _Template (jsonFormat)
    text: _Template | None  # stringFormat

    def line(self, record: FinishedRequest) -> str:
        if self.text is not None:
            return str(self.text.value(record, text=True)).rstrip("\n")
        assert self.json_fields is not None
        return json.dumps(_evaluate(self.json_fields, record), separators=(",", ":"), ensure_ascii=False)

    def fields(self, record: FinishedRequest) -> dict[str, Any]:
        """The JSON fields (for OTLP attributes); a text format gives {"message": line}."""
        if self.json_fields is None:
            return {"message": self.line(record)}
        return _evaluate(self.json_fields, record)


def _evaluate(tree: Mapping[str, Any], record: FinishedRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, _Template):
            out[key] = value.value(record, text=False)
        elif isinstance(value, Mapping):
            out[key] = _evaluate(value, record)
        else:
            out[key] = value
    return out


def compile_json_format(
    spec: Mapping[str, Any],
    redacted: frozenset[str] = DEFAULT_REDACTED_HEADERS,
    redacted_query: frozenset[str] = DEFAULT_REDACTED_QUERY,
) -> LogFormat:
    """`jsonFormat`: string values are templates, nested objects nest, numbers and booleans stay literal."""
    ctx = Context(frozenset(h.lower() for h in redacted), frozenset(q.lower() for q in redacted_query))
    return LogFormat(_compile_tree(spec, ctx, ""), None)


def _compile_tree(spec: Mapping[str, Any], ctx: Context, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in spec.items():
        where = f"{path}.{key}" if path else str(key)
        if isinstance(value, str):
            try:
                out[str(key)] = _template(value, ctx)
            except FormatError as e:
                raise FormatError(f"{where}: {e}") from None
        elif isinstance(value, Mapping):
            out[str(key)] = _compile_tree(value, ctx, where)
        elif isinstance(value, (int, float, bool)) or value is None:
            out[str(key)] = value
        else:
            raise FormatError(f"{where}: a value must be a string, a number, a boolean or an object")
    return out


def compile_text_format(
    text: str,
    redacted: frozenset[str] = DEFAULT_REDACTED_HEADERS,
    redacted_query: frozenset[str] = DEFAULT_REDACTED_QUERY,
) -> LogFormat:
    """`stringFormat` (Envoy's default line when empty)."""
    ctx = Context(frozenset(h.lower() for h in redacted), frozenset(q.lower() for q in redacted_query))
    return LogFormat(None, _template(text or DEFAULT_TEXT_FORMAT, ctx))
