"""Kubernetes core kinds: v1 Secret (`data` base64 and `stringData`, merged as the API server does, stringData
wins) and v1 ConfigMap (`data` strings and `binaryData` base64; a BackendTLSPolicy reads its CA from key
`ca.crt`, DESIGN.md 4.2)."""

from __future__ import annotations

from typing import Any

from egressproxy.config.kinds import KindSchema, register
from egressproxy.config.schema import Base64, Bool, Map, Str, Walker

__all__ = ["CONFIG_MAP_CA_KEY"]

CONFIG_MAP_CA_KEY = "ca.crt"  # the key a BackendTLSPolicy caCertificateRef reads from a ConfigMap

_DATA = Map(Base64())
_STRING_DATA = Map(Str())


def _secret_body(doc: Any, line: int, w: Walker) -> dict[str, Any]:
    data: dict[str, bytes] = {}
    if "data" in doc and doc["data"] is not None:
        data.update(_DATA.check(doc["data"], "data", w.value_line(doc, "data", line), w) or {})
    if "stringData" in doc and doc["stringData"] is not None:
        strings = _STRING_DATA.check(doc["stringData"], "stringData", w.value_line(doc, "stringData", line), w) or {}
        data.update({k: v.encode("utf-8") for k, v in strings.items()})
    secret_type = "Opaque"
    if "type" in doc:
        secret_type = Str().check(doc["type"], "type", w.value_line(doc, "type", line), w) or "Opaque"
    if "immutable" in doc:
        Bool().check(doc["immutable"], "immutable", w.value_line(doc, "immutable", line), w)
    return {"data": data, "type": secret_type}


register(
    KindSchema(
        "Secret",
        ("v1",),
        body=_secret_body,
        top_fields=("data", "stringData", "type", "immutable"),
    )
)


def _config_map_body(doc: Any, line: int, w: Walker) -> dict[str, Any]:
    """{"data": {key: str}, "binaryData": {key: bytes}}; a key in both is an error, as the API server says."""
    data: dict[str, str] = {}
    binary: dict[str, bytes] = {}
    if "data" in doc and doc["data"] is not None:
        data = _STRING_DATA.check(doc["data"], "data", w.value_line(doc, "data", line), w) or {}
    if "binaryData" in doc and doc["binaryData"] is not None:
        binary = _DATA.check(doc["binaryData"], "binaryData", w.value_line(doc, "binaryData", line), w) or {}
    for key in sorted(set(data) & set(binary)):
        w.error(f"binaryData.{key}", w.value_line(doc, "binaryData", line), f"key {key!r} is also in data")
    if "immutable" in doc:
        Bool().check(doc["immutable"], "immutable", w.value_line(doc, "immutable", line), w)
    return {"data": data, "binaryData": binary}


register(
    KindSchema(
        "ConfigMap",
        ("v1",),
        body=_config_map_body,
        top_fields=("data", "binaryData", "immutable"),
    )
)
