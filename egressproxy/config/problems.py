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
        return _printable(f"{self.file}:{self.line}: {self.obj}: {self.path}: {self.message}")


def _printable(text: str) -> str:
    """One line, whatever the configuration held: a key or value quoted in a problem can carry a line break, a
    record separator or a terminal escape (found by fuzzing); those are written as escapes (`\\x1e`)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
