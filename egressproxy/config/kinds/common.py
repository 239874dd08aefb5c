"""Schema pieces shared by several kinds: object references, policy target references, header modifiers.

Header names and values follow Gateway API's HTTPHeaderName and HTTPHeader: a name is an RFC 7230 token of at
most 256 characters, a value at most 4096 characters and never a CR or LF (a value carrying `\r\nInjected: yes`
would write a second header). Within one modifier a name is set, added or removed at most once, compared
case-insensitively as HTTP compares header names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

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
    "HEADER_NAME",
    "HEADER_VALUE",
    "header_name_error",
    "header_value_error",
    "unique_names",
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
# Gateway API's Group and Kind: a DNS subdomain (or empty, the core group) and a CamelCase identifier.
GROUP = Str(pattern=r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*|")
KIND = Str(min_length=1, pattern=r"[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?")

PARENT_REF = Obj(
    {
        "group": GROUP,
        "kind": KIND,
        "namespace": Str(),
        "name": F(NAME, required=True),
        "sectionName": Str(),
        "port": Int(minimum=1, maximum=65535),
    }
)

BACKEND_REF = Obj(
    {
        "group": GROUP,
        "kind": KIND,
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

# Gateway API's HTTPHeaderName: an RFC 7230 token (no ':' so no HTTP/2 pseudo-headers, no space, no '/').
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
HEADER_NAME_MAX = 256
HEADER_VALUE_MAX = 4096


def header_name_error(value: str) -> str | None:
    """Why `value` is not a Gateway API HTTPHeaderName (also the type of query parameter names), or None."""
    if len(value) > HEADER_NAME_MAX:
        return f"invalid name {value[:40]!r}...: longer than {HEADER_NAME_MAX} characters"
    if not _TOKEN.fullmatch(value):
        return f"invalid name {value!r}: must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)"
    return None


def header_value_error(value: str) -> str | None:
    """Why `value` cannot be a header value: CR or LF would inject a header (or split the response)."""
    if "\r" in value or "\n" in value:
        return "must not contain CR or LF"
    if len(value) > HEADER_VALUE_MAX:
        return f"must be at most {HEADER_VALUE_MAX} characters, got {len(value)}"
    return None


HEADER_NAME = Str(min_length=1, check_fn=header_name_error)
HEADER_VALUE = Str(min_length=1, check_fn=header_value_error)

Rule = Callable[[dict[str, Any]], list[tuple[str, str]]]


def unique_names(list_field: str, what: str, key: str | None = "name", fold_case: bool = True) -> Rule:
    """A rule: no two items of `list_field` share a name (`key` of each item, or the item itself when None).

    The problem names the later item, as Kubernetes reports a duplicate key of a `listType=map` list.
    """

    def rule(value: dict[str, Any]) -> list[tuple[str, str]]:
        seen: dict[str, int] = {}
        problems = []
        for i, item in enumerate(value.get(list_field) or []):
            name = item if key is None else (item.get(key) if isinstance(item, dict) else None)
            if not isinstance(name, str):
                continue
            folded = name.lower() if fold_case else name
            if folded in seen:
                where = f"{list_field}[{i}]" if key is None else f"{list_field}[{i}].{key}"
                problems.append((where, f"duplicate {what} {name!r} (also {list_field}[{seen[folded]}])"))
            else:
                seen[folded] = i
        return problems

    return rule


_HEADER = Obj({"name": F(HEADER_NAME, required=True), "value": F(HEADER_VALUE, required=True)})
HEADER_MODIFIER = Obj(
    {
        "set": List(_HEADER, max_items=16),
        "add": List(_HEADER, max_items=16),
        "remove": List(HEADER_NAME, max_items=16),
    },
    rules=(
        unique_names("set", "header name"),
        unique_names("add", "header name"),
        unique_names("remove", "header name", key=None),
    ),
)

# Gateway API LocalObjectReference: group (may be "" for the core group), kind and name are all required.
_GROUP = r"|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_KIND = r"[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?"
EXTENSION_REF = Obj(
    {
        "group": F(Str(pattern=_GROUP), required=True),
        "kind": F(Str(min_length=1, pattern=_KIND), required=True),
        "name": F(NAME, required=True),
    }
)
