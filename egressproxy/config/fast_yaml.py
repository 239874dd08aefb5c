"""Reading the common subset of YAML with libyaml (C), as ruamel.yaml's round-trip loader would read it.

ruamel.yaml's round-trip parser is pure Python: ~2.5 ms per HTTPRoute, 25 s for a 10,000-route config, and a
heap high-water mark of several hundred MiB (docs/performance.md, "Config load time"). libyaml composes the
same text ~10x faster and keeps a start mark (line, column) on every node, which is all the loader needs for
`file:line: object: field: problem` lines. This module turns those nodes into dicts and lists carrying a
ruamel-compatible `lc` (`lc.line`, `lc.key(k)`, `lc.value(k)`, `lc.item(i)`), so `Walker` and everything
after it are unchanged.

It reads only what it can read exactly as ruamel (YAML 1.2 core schema, timestamps kept as strings) would, and
raises `Unsupported` for the rest, where the caller falls back to ruamel for the whole text: any syntax error
(so the problem line keeps ruamel's wording), duplicate or non-scalar keys, anchors and aliases, merge keys,
`%YAML` directives, tags beyond str/int/float/bool/null/timestamp, and nesting deeper than the caller's
limit (the loader reports such a document with its identity, from ruamel's reading, as before).
Plain scalars are resolved with ruamel's own YAML 1.2 patterns (`ruamel.yaml.resolver.implicit_resolvers`).
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from ruamel.yaml.resolver import implicit_resolvers

try:
    from yaml.cyaml import CParser
except ImportError:  # PyYAML built without libyaml: every text goes to ruamel
    CParser = None

__all__ = ["LinedMap", "LinedSeq", "Unsupported", "read_documents"]

_TAG = "tag:yaml.org,2002:"
_PLAIN = "?plain"  # an untagged plain scalar, resolved below
_STR, _SEQ, _MAP = _TAG + "str", _TAG + "seq", _TAG + "map"


class Unsupported(Exception):
    """The text uses something read here differently or not at all: the caller reads it with ruamel."""


def _patterns_1_2() -> dict[str | None, list[tuple[str, Any]]]:
    """ruamel's YAML 1.2 implicit resolvers by first character (None: tried for every value); each pattern is a
    compiled regular expression (behind ruamel's LazyEval)."""
    table: dict[str | None, list[tuple[str, Any]]] = {}
    for versions, tag, regexp, first in implicit_resolvers:
        if (1, 2) in versions:
            for ch in first if first is not None else [None]:
                table.setdefault(ch, []).append((tag, regexp))
    return table


_PATTERNS = _patterns_1_2()
_ANY_FIRST = _PATTERNS.get(None, [])


def _plain_tag(value: str) -> str:
    for tag, regexp in _PATTERNS.get(value[:1], []) + _ANY_FIRST:
        if regexp.match(value):
            return tag
    return _STR


# Positions are packed into one int per key (or item): a 10,000-route config has ~400,000 of them, and a tuple of
# four ints (line numbers above 256 are objects of their own) took ~128 bytes where the int takes ~36.
_COL_BITS, _LINE_BITS = 16, 24
_COL_MASK, _HALF_BITS = (1 << _COL_BITS) - 1, _COL_BITS + _LINE_BITS


def _pack(line: int, col: int) -> int | tuple[int, int]:
    if line >> _LINE_BITS or col >> _COL_BITS:
        return (line, col)  # (a file of 16 million lines, a column past 65,535): kept as is
    return line << _COL_BITS | col


def _unpack(packed: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(packed, tuple):
        return packed
    return packed >> _COL_BITS, packed & _COL_MASK


class _MapLines:
    """ruamel's `LineCol` for a mapping: 0-based (line, column) of the mapping, of each key and each value."""

    __slots__ = ("line", "col", "_at")

    def __init__(self, line: int, col: int) -> None:
        self.line, self.col = line, col
        self._at: dict[Any, Any] = {}

    def add(self, k: Any, key_mark: Any, value_mark: Any) -> None:
        key_at, value_at = _pack(key_mark.line, key_mark.column), _pack(value_mark.line, value_mark.column)
        both_packed = isinstance(key_at, int) and isinstance(value_at, int)
        self._at[k] = key_at << _HALF_BITS | value_at if both_packed else (key_at, value_at)  # type: ignore[operator]

    def _both(self, k: Any) -> tuple[int | tuple[int, int], int | tuple[int, int]]:
        at = self._at[k]
        return at if isinstance(at, tuple) else (at >> _HALF_BITS, at & ((1 << _HALF_BITS) - 1))

    def key(self, k: Any) -> tuple[int, int]:
        return _unpack(self._both(k)[0])

    def value(self, k: Any) -> tuple[int, int]:
        return _unpack(self._both(k)[1])


class _SeqLines:
    """ruamel's `LineCol` for a sequence: 0-based (line, column) of the sequence and of each item."""

    __slots__ = ("line", "col", "_at")

    def __init__(self, line: int, col: int) -> None:
        self.line, self.col = line, col
        self._at: list[int | tuple[int, int]] = []

    def add(self, mark: Any) -> None:
        self._at.append(_pack(mark.line, mark.column))

    def item(self, i: int) -> tuple[int, int]:
        return _unpack(self._at[i])


class LinedMap(dict[Any, Any]):
    """A mapping read from YAML, knowing where its keys and values are."""

    __slots__ = ("lc",)
    lc: _MapLines


class LinedSeq(list[Any]):
    """A sequence read from YAML, knowing where its items are."""

    __slots__ = ("lc",)
    lc: _SeqLines


class _Composer(CParser if CParser is not None else object):  # type: ignore[misc]
    """libyaml's composer, leaving every implicit tag for `_scalar` to resolve (the YAML 1.2 way)."""

    def descend_resolver(self, parent: Any, index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode:
            return _PLAIN if implicit[0] else _STR
        return _MAP if kind is yaml.MappingNode else _SEQ


def read_documents(text: str, max_depth: int) -> list[Any]:
    """Every document of `text` as LinedMap / LinedSeq / scalars; raises Unsupported (see the module doc),
    also for a node more than `max_depth` mappings and lists deep (as `loader._deeper_than` counts)."""
    if CParser is None or "%YAML" in text:
        raise Unsupported("a %YAML directive")
    composer = _Composer(text)
    try:
        docs: list[Any] = []
        while composer.check_node():
            docs.append(_Builder(max_depth).construct(composer.get_node(), 0))
        return docs
    except yaml.YAMLError as e:
        raise Unsupported("a YAML error, worded by ruamel") from e
    finally:
        composer.dispose()


class _Builder:
    """Nodes to LinedMap / LinedSeq / scalars for one document."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.seen: set[int] = set()  # nodes built: one met again is an alias

    def construct(self, node: yaml.Node, depth: int) -> Any:
        if depth > self.max_depth:
            raise Unsupported("deep nesting")
        if id(node) in self.seen:
            raise Unsupported("an alias")
        self.seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            return _scalar(node)
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
            return self.sequence(node, depth)
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
            return self.mapping(node, depth)
        raise Unsupported(f"tag {node.tag}")

    def sequence(self, node: yaml.SequenceNode, depth: int) -> LinedSeq:
        out = LinedSeq()
        out.lc = lines = _SeqLines(node.start_mark.line, node.start_mark.column)
        for item in node.value:
            out.append(self.construct(item, depth + 1))
            lines.add(item.start_mark)
        return out

    def mapping(self, node: yaml.MappingNode, depth: int) -> LinedMap:
        out = LinedMap()
        out.lc = lines = _MapLines(node.start_mark.line, node.start_mark.column)
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or id(key_node) in self.seen:
                raise Unsupported("a complex key or an alias")
            key = _key(key_node)
            if key in out or (key_node.tag == _PLAIN and key_node.value == "<<"):
                raise Unsupported("a duplicate or merge key")
            out[key] = self.construct(value_node, depth + 1)
            lines.add(key, key_node.start_mark, value_node.start_mark)
        return out


def _scalar(node: yaml.ScalarNode) -> Any:
    value: str = node.value
    tag = _plain_tag(value) if node.tag == _PLAIN else node.tag
    if node.tag not in (_PLAIN, _STR) and _plain_tag(value) != tag:
        raise Unsupported(f"an explicit tag {tag}")  # e.g. `!!bool yes`, read with YAML 1.1 rules by ruamel
    if tag in (_STR, _TAG + "timestamp"):  # timestamps stay strings, as Kubernetes reads them
        return value
    if tag == _TAG + "null":
        return None
    if tag == _TAG + "bool":
        return value.lower() == "true"
    if tag == _TAG + "int":
        return _int(value)
    if tag == _TAG + "float":
        return _float(value)
    raise Unsupported(f"tag {tag}")


def _int(value: str) -> int:
    text = value.replace("_", "")
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    base = {"0x": 16, "0o": 8, "0b": 2}.get(digits[:2].lower(), 10)
    try:
        return sign * int(digits[2:] if base != 10 else digits, base)
    except ValueError as e:
        raise Unsupported("an integer read differently") from e


def _float(value: str) -> float:
    text = value.replace("_", "").lower()
    if text.endswith((".inf", ".nan")):
        return float(text.replace(".", ""))
    try:
        return float(text)
    except ValueError as e:
        raise Unsupported("a float read differently") from e


def _key(node: yaml.ScalarNode) -> Any:
    """A mapping key; a string one interned, as the same few field names repeat in every document."""
    key = _scalar(node)
    return sys.intern(key) if type(key) is str else key
