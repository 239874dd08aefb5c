"""A listener's allowedRoutes namespace selector, evaluated on the one label every namespace has: its name.

The configuration holds no Namespace objects, so `kubernetes.io/metadata.name` is the only label known.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def selector_matches(selector: Mapping[str, Any], namespace: str) -> bool:
    labels = {NAMESPACE_NAME_LABEL: namespace}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True
