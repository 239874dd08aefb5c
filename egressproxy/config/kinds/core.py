"""v1 Secret: `data` (base64) and `stringData`, merged as the API server does (stringData wins)."""

from __future__ import annotations

from typing import Any

from egressproxy.config.kinds import KindSchema, register
from egressproxy.config.schema import Base64, Bool, Map, Str, Walker

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
