"""HTTPListenerPolicy `accessLog` and `tracing`, in the compiled form the data plane reads (Snapshot.compiled).

The compiler (`egressproxy/compiler/observability_forms.py`) turns each policy's access-log sinks into
`AccessLogSink`s with their format already compiled, and its tracing block into `TracingSettings`; the
access-log sink and the tracer only look them up per listener (a listener-scoped policy first, then the
gateway's). Collector headers hold no credential in these schemas; endpoints print as configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from egressproxy.access_log_format import LogFormat

__all__ = ["AccessLogSink", "AccessLogs", "CustomTag", "TracingSettings", "OtlpTarget"]


@dataclass(frozen=True, slots=True)
class OtlpTarget:
    """Where OTLP goes: `protocol` `http` (OTLP/HTTP protobuf, `endpoint` a base URL) or `grpc` (host:port)."""

    endpoint: str
    protocol: str  # http | grpc

    def to_dump(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "protocol": self.protocol}


@dataclass(frozen=True, slots=True)
class AccessLogSink:
    """One `accessLog[]` entry: a file (`path`) or an OTLP collector (`otlp`), and the compiled format."""

    format: LogFormat = field(compare=False)
    path: str | None = None
    otlp: OtlpTarget | None = None

    def to_dump(self) -> dict[str, Any]:
        if self.path is not None:
            return {"fileSink": {"path": self.path}}
        assert self.otlp is not None
        return {"otel": self.otlp.to_dump()}


@dataclass(frozen=True, slots=True)
class AccessLogs:
    """The access logs of one listener: the deciding policy and its sinks."""

    policy: str  # HTTPListenerPolicy/ns/name
    sinks: tuple[AccessLogSink, ...]

    def to_dump(self) -> dict[str, Any]:
        return {"policy": self.policy, "sinks": [s.to_dump() for s in self.sinks]}


@dataclass(frozen=True, slots=True)
class CustomTag:
    """A span attribute: a literal, an environment variable (read at compile time) or a request header."""

    name: str
    literal: str | None = None
    request_header: str | None = None  # lower case; a credential header is never read


@dataclass(frozen=True, slots=True)
class TracingSettings:
    policy: str  # HTTPListenerPolicy/ns/name
    target: OtlpTarget
    service_name: str = "egressproxy"
    sampling: float = 1.0  # 0..1, for requests without a sampled parent
    tags: tuple[CustomTag, ...] = ()
    # W3C_TRACE_CONTEXT, W3C_BAGGAGE, B3, B3_SINGLE_HEADER: read from the client and written upstream, in order
    propagators: tuple[str, ...] = ("W3C_TRACE_CONTEXT",)

    def to_dump(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            **self.target.to_dump(),
            "serviceName": self.service_name,
            "sampling": self.sampling,
            "tags": [t.name for t in self.tags],
            "propagators": list(self.propagators),
        }
