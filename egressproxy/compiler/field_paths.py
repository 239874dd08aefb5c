"""Field paths of the declarative kind schemas: every path a kind accepts, and the paths one object sets.

Honest status (`enforcement`) classifies fields by path, so both sides must spell paths the same way: dotted
field names from `spec` down, list items and map keys transparent (`spec.rules.filters.type`, not
`spec.rules[0]...`; `spec.tracing.customTags.literal` for any tag name), the fields of every shape a `OneOf`
allows, and a path ends where the schema stops naming fields (a scalar, a `Free` value).
The set paths are read from the document as written (`Resource.raw`), not from the defaulted spec, so a default
the schema fills in never counts as a field the user set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from egressproxy.config.kinds import KINDS, KindSchema
from egressproxy.config.schema import Derive, List, Map, Obj, OneOf, Type

__all__ = ["schema_paths", "kind_paths", "set_paths"]


def schema_paths(schema: Type, prefix: str) -> Iterator[str]:
    """Every field path under `prefix` that `schema` accepts (each object field, nested ones included)."""
    if isinstance(schema, Derive):
        yield from schema_paths(schema.inner, prefix)
    elif isinstance(schema, List):
        yield from schema_paths(schema.item, prefix)
    elif isinstance(schema, Map):
        yield from schema_paths(schema.values, prefix)
    elif isinstance(schema, OneOf):
        for option in schema.options:
            yield from schema_paths(option, prefix)
    elif isinstance(schema, Obj):
        for name in schema.fields:
            spec = schema.field_spec(name)
            assert spec is not None
            path = f"{prefix}.{name}"
            yield path
            yield from schema_paths(spec.type, path)


def kind_paths(kind: KindSchema) -> tuple[str, ...]:
    """Every `spec` field path of a kind, without duplicates, in schema order (empty for kinds without spec)."""
    if kind.spec is None:
        return ()
    return tuple(dict.fromkeys(schema_paths(kind.spec, "spec")))


def set_paths(kind: str, raw_spec: Any) -> tuple[str, ...]:
    """The field paths an object's written `spec` sets (an explicit null is unset, as the API server reads it)."""
    schema = KINDS[kind].spec
    if schema is None or raw_spec is None:
        return ()
    # Walked as read (LinedMap or ruamel containers are Mappings and lists): no plain copy of every document.
    return tuple(dict.fromkeys(_walk(schema, raw_spec, "spec")))


def _walk(schema: Type, value: Any, prefix: str) -> Iterator[str]:
    if isinstance(schema, Derive):
        yield from _walk(schema.inner, value, prefix)
    elif isinstance(schema, List) and isinstance(value, list):
        for item in value:
            yield from _walk(schema.item, item, prefix)
    elif isinstance(schema, Map) and isinstance(value, Mapping):
        for item in value.values():
            yield from _walk(schema.values, item, prefix)
    elif isinstance(schema, OneOf):
        for option in schema.options:
            yield from _walk(option, value, prefix)
    elif isinstance(schema, Obj) and isinstance(value, Mapping):
        for name, item in value.items():
            spec = schema.field_spec(name)
            if spec is None or item is None:
                continue
            path = f"{prefix}.{name}"
            yield path
            yield from _walk(spec.type, item, path)
