"""HTTPListenerPolicy `accessLog[]` and `tracing`, compiled once per snapshot (egressproxy/observability_settings.py).

A `jsonFormat` or `stringFormat` is compiled here (egressproxy/access_log_format.py); an unknown command operator
is a validation problem naming the field, so a typo never writes empty fields in production. The headers and
query parameters a configured credential is injected into are added to the redacted set of every format.
Sinks this build does not write (`grpcService`, `openTelemetry` ALS) are left out here and reported
`Unsupported` by egressproxy/compiler/enforcement.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from egressproxy.access_log_format import (
    DEFAULT_JSON_FORMAT,
    DEFAULT_REDACTED_HEADERS,
    DEFAULT_REDACTED_QUERY,
    OTLP_ATTRIBUTES_FORMAT,
    FormatError,
    LogFormat,
    compile_json_format,
    compile_text_format,
)
from egressproxy.compiler.compilation import Compilation
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.credentials import CredentialTable
from egressproxy.observability_settings import AccessLogSink, CustomTag, OtlpTarget, TracingSettings

__all__ = ["compile_access_logs", "compile_tracing", "redacted_names"]


def redacted_names(credentials: CredentialTable) -> tuple[frozenset[str], frozenset[str]]:
    """(headers, query parameters) that must print redacted: the defaults and every injected credential's."""
    headers, query = set(DEFAULT_REDACTED_HEADERS), set(DEFAULT_REDACTED_QUERY)
    for credential in (*credentials.providers.values(), *credentials.scopes.values()):
        headers.update(name.lower() for name in credential.removes)
        query.update(name.lower() for name in credential.removes_query)
    return frozenset(headers), frozenset(query)


def compile_access_logs(comp: Compilation, credentials: CredentialTable) -> dict[ObjectRef, tuple[AccessLogSink, ...]]:
    """HTTPListenerPolicy ref -> its file and OTLP access-log sinks (problems for formats that do not compile)."""
    headers, query = redacted_names(credentials)
    out: dict[ObjectRef, tuple[AccessLogSink, ...]] = {}
    for res in comp.of_kind("HTTPListenerPolicy"):
        entries = res.spec.get("accessLog") or []
        sinks = [s for i, e in enumerate(entries) if (s := _sink(comp, res, i, e, headers, query)) is not None]
        if sinks:
            out[res.ref] = tuple(sinks)
    return out


def _sink(
    comp: Compilation, res: Resource, index: int, entry: Mapping[str, Any], headers: frozenset[str], query: frozenset[str]
) -> AccessLogSink | None:
    if "fileSink" in entry:
        spec = entry["fileSink"]
        path = f"spec.accessLog[{index}].fileSink"
        fmt = _format(comp, res, path, spec, headers, query)
        return AccessLogSink(fmt, path=spec["path"]) if fmt is not None else None
    if "otel" in entry:
        spec = entry["otel"]
        fmt = compile_json_format(OTLP_ATTRIBUTES_FORMAT, headers, query)
        return AccessLogSink(fmt, otlp=otlp_target(spec["endpoint"], spec.get("protocol") or "grpc"))
    return None


def _format(
    comp: Compilation, res: Resource, path: str, spec: Mapping[str, Any], headers: frozenset[str], query: frozenset[str]
) -> LogFormat | None:
    json_format, string_format = spec.get("jsonFormat"), spec.get("stringFormat")
    if json_format is not None and string_format is not None:
        comp.problem(res, f"{path}.jsonFormat", "set only one of jsonFormat and stringFormat")
        return None
    try:
        if json_format is not None:
            if not isinstance(json_format, Mapping):
                raise FormatError("jsonFormat must be an object of field names to format strings")
            return compile_json_format(json_format, headers, query)
        if string_format is not None:
            return compile_text_format(string_format, headers, query)
        return compile_json_format(DEFAULT_JSON_FORMAT, headers, query)
    except FormatError as e:
        field = "jsonFormat" if json_format is not None else "stringFormat"
        comp.problem(res, f"{path}.{field}", str(e))
        return None


def otlp_target(endpoint: str, protocol: str) -> OtlpTarget:
    """`grpc` -> host:port; `http/protobuf` and `http/json` -> OTLP/HTTP (protobuf) at a base URL."""
    if protocol == "grpc":
        return OtlpTarget(endpoint.removeprefix("http://").removeprefix("https://"), "grpc")
    if "://" not in endpoint:
        endpoint = f"http://{endpoint}"
    return OtlpTarget(endpoint.rstrip("/"), "http")


def compile_tracing(comp: Compilation) -> dict[ObjectRef, TracingSettings]:
    """HTTPListenerPolicy ref -> its tracing settings."""
    out: dict[ObjectRef, TracingSettings] = {}
    for res in comp.of_kind("HTTPListenerPolicy"):
        tracing = res.spec.get("tracing")
        if not tracing:
            continue
        target, service = _tracing_target(tracing["provider"], res.namespace)
        out[res.ref] = TracingSettings(
            policy=f"HTTPListenerPolicy/{res.namespace}/{res.name}",
            target=target,
            service_name=service,
            sampling=_sampling(tracing),
            tags=_tags(tracing),
            propagators=tuple(dict.fromkeys(tracing.get("propagators") or ("W3C_TRACE_CONTEXT",))),
        )
    return out


def _tracing_target(provider: Mapping[str, Any], namespace: str) -> tuple[OtlpTarget, str]:
    if "otel" in provider:
        seed = provider["otel"]
        if seed.get("httpAddress"):
            return otlp_target(seed["httpAddress"], seed.get("protocol") or "http/protobuf"), "egressproxy"
        return otlp_target(seed["grpcAddress"], "grpc"), "egressproxy"
    otel = provider["openTelemetry"]
    ref = otel["grpcService"]["backendRef"]
    port = ref.get("port") or 4317
    host = f"{ref['name']}.{ref.get('namespace') or namespace}.svc.cluster.local"
    return OtlpTarget(f"{host}:{port}", "grpc"), otel.get("serviceName") or "egressproxy"


def _sampling(tracing: Mapping[str, Any]) -> float:
    """samplingRate (the seeds') or randomSampling, times overallSampling; percentages, default 100."""
    rate = tracing.get("samplingRate")
    if rate is None:
        rate = tracing.get("randomSampling", 100)
    overall = tracing.get("overallSampling", 100)
    return max(0.0, min(1.0, float(rate) / 100 * float(overall) / 100))


def _tags(tracing: Mapping[str, Any]) -> tuple[CustomTag, ...]:
    tags: list[CustomTag] = []
    for name, tag in (tracing.get("customTags") or {}).items():
        tags.append(_tag(str(name), tag.get("literal"), tag.get("environment"), None, tag.get("requestHeader"), None))
    for attribute in tracing.get("attributes") or []:
        env, header = attribute.get("environment") or {}, attribute.get("requestHeader") or {}
        if "metadata" in attribute:
            continue  # Unsupported (enforcement.py)
        tags.append(
            _tag(
                attribute["name"],
                (attribute.get("literal") or {}).get("value"),
                env.get("name"),
                env.get("defaultValue"),
                header.get("name"),
                header.get("defaultValue"),
            )
        )
    return tuple(tags)


def _tag(
    name: str, literal: str | None, env: str | None, env_default: str | None, header: str | None, header_default: str | None
) -> CustomTag:
    if env is not None:
        return CustomTag(name, literal=os.environ.get(env, env_default or ""))
    if header is not None:
        return CustomTag(name, literal=header_default, request_header=header.lower())
    return CustomTag(name, literal=literal or "")
