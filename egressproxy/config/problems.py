"""One configuration problem, located at a file, line and field path."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Problem", "ObjectRef"]


@dataclass(frozen=True, order=True)
class ObjectRef:
    """`Kind/namespace/name`, the way problems, denials and captures name an object."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    obj: str  # "Kind/namespace/name", or "-" when the document has no usable identity
    path: str  # dotted field path, "-" for document-level problems
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.obj}: {self.path}: {self.message}"
