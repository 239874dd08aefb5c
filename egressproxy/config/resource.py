"""A validated configuration object: identity, where it came from, and its plain, defaulted spec."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from egressproxy.config.problems import ObjectRef
from egressproxy.config.schema import Walker

__all__ = ["Resource"]


@dataclass(eq=False)
class Resource:
    api_version: str
    kind: str
    namespace: str
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    spec: dict[str, Any]  # validated, defaulted, plain; for a Secret: {"data": {key: bytes}, "type": str}
    file: str
    line: int  # the line of the document's first key
    # The document as read (config.fast_yaml LinedMap or a ruamel node), for locating fields in later problems
    raw: Any = field(default=None, repr=False)

    @property
    def group(self) -> str:
        return self.api_version.split("/", 1)[0] if "/" in self.api_version else ""

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(self.kind, self.namespace, self.name)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    def line_of(self, path: str) -> int:
        """The 1-based line of a dotted field path such as `spec.rules[0].backendRefs[1].name`."""
        return Walker("").line_for(self.raw, path, self.line) if self.raw is not None else self.line
