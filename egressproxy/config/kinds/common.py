"""Schema pieces shared by several kinds: object references, policy target references, header modifiers."""

from __future__ import annotations

from egressproxy.config.schema import F, Int, List, Obj, Str

__all__ = [
    "NAME",
    "SECRET_REF",
    "LOCAL_REF",
    "PARENT_REF",
    "BACKEND_REF",
    "POLICY_TARGET_REF",
    "POLICY_TARGET_REFS",
    "HEADER_MODIFIER",
    "EXTENSION_REF",
]

NAME = Str(min_length=1)

# Gateway API SecretObjectReference: group "" and kind Secret by default.
SECRET_REF = Obj(
    {
        "name": F(NAME, required=True),
        "namespace": Str(),
        "group": Str(),
        "kind": Str(enum=("Secret",)),
    }
)

LOCAL_REF = Obj({"name": F(NAME, required=True), "namespace": Str(), "group": Str(), "kind": Str()})

# Gateway API ParentReference. group/kind default to the EgressGateway (DESIGN.md 4.1).
PARENT_REF = Obj(
    {
        "group": Str(),
        "kind": Str(),
        "namespace": Str(),
        "name": F(NAME, required=True),
        "sectionName": Str(),
        "port": Int(minimum=1, maximum=65535),
    }
)

BACKEND_REF = Obj(
    {
        "group": Str(),
        "kind": Str(),
        "name": F(NAME, required=True),
        "namespace": Str(),
        "port": Int(minimum=1, maximum=65535),
        "weight": Int(minimum=0, maximum=1000000),
    }
)

POLICY_TARGET_REF = Obj(
    {
        "group": Str(),
        "kind": F(Str(min_length=1), required=True),
        "name": F(NAME, required=True),
        "namespace": Str(),
        "sectionName": Str(),
    }
)
POLICY_TARGET_REFS = List(POLICY_TARGET_REF, min_items=1)

_HEADER = Obj({"name": F(Str(min_length=1), required=True), "value": F(Str(), required=True)})
HEADER_MODIFIER = Obj({"set": List(_HEADER), "add": List(_HEADER), "remove": List(Str(min_length=1))})

EXTENSION_REF = Obj({"group": Str(), "kind": F(Str(min_length=1), required=True), "name": F(NAME, required=True)})
