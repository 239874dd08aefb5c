"""The registry of every configuration kind: its served API versions and its schema.

Each group lives in its own module (`apoxy`, `gatewayapi`, `kgateway`, `egresspolicy`, `core`); they register
their kinds here by calling `register`. Field names are the seeds' own, never renamed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from egressproxy.config.schema import Obj, Type, Walker

__all__ = ["KindSchema", "KINDS", "register"]


@dataclass(frozen=True)
class KindSchema:
    kind: str
    api_versions: tuple[str, ...]
    spec: Type | None = None  # the schema of `spec`; None for kinds without one (Secret)
    spec_required: bool = True
    # Kinds whose payload is not under `spec` (Secret) check the whole document themselves.
    body: Callable[[Any, int, Walker], dict[str, Any]] | None = None
    top_fields: tuple[str, ...] = ("spec",)
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Versions whose `spec` has another shape than `spec` (TLSRoute v1alpha3 and v1 require hostnames). `spec`
    # stays the widest shape: field paths and their enforcement decisions are read from it.
    version_specs: Mapping[str, Type] = field(default_factory=dict)

    def spec_for(self, api_version: Any) -> Type | None:
        """The schema of `spec` as `api_version` serves it."""
        return self.version_specs.get(api_version, self.spec) if isinstance(api_version, str) else self.spec

    def check_body(self, doc: Any, line: int, w: Walker) -> dict[str, Any]:
        if self.body is not None:
            return self.body(doc, line, w)
        spec_schema = self.spec_for(doc.get("apiVersion"))
        assert spec_schema is not None
        if "spec" not in doc:
            if self.spec_required:
                w.error("spec", line, "required field is missing")
                return {}
            doc_spec: Any = {}
        else:
            doc_spec = doc["spec"]
        value = spec_schema.check(doc_spec, "spec", w.value_line(doc, "spec", line), w)
        return value if isinstance(value, dict) else {}


KINDS: dict[str, KindSchema] = {}


def register(schema: KindSchema) -> KindSchema:
    assert schema.kind not in KINDS, f"kind {schema.kind} registered twice"
    KINDS[schema.kind] = schema
    return schema


# Importing the group modules registers their kinds.
from egressproxy.config.kinds import apoxy, core, egresspolicy, gatewayapi, kgateway  # noqa: E402,F401

_ = Obj  # re-exported for kind modules' convenience
