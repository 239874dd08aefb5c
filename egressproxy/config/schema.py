"""A small declarative schema language for the CRD kinds, and the walker that validates against it.

A kind's spec is described as data (`Obj`, `List`, `Str`, ...), the way the seeds' OpenAPI describes it, and one
walker checks any YAML node against it. The walker reports every problem at once with the field path and the
line of the offending node, fills defaults, and returns plain Python values (dicts, lists, str, int, bool, and
seconds as float for durations), so nothing downstream sees ruamel types.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from egressproxy.durations import DurationError, parse_duration

__all__ = [
    "Type",
    "Str",
    "Int",
    "Num",
    "Bool",
    "Duration",
    "Base64",
    "Free",
    "Map",
    "List",
    "Obj",
    "F",
    "OneOf",
    "Derive",
    "Walker",
]

Issue = tuple[str, int, str]  # (path, line, message)


class Type:
    """Base of all schema types; `check` validates one node and returns its plain value."""

    def check(self, node: Any, path: str, line: int, w: Walker) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__.lower()


def _type_name(node: Any) -> str:
    if node is None:
        return "null"
    if isinstance(node, bool):
        return "boolean"
    if isinstance(node, int):
        return "integer"
    if isinstance(node, float):
        return "number"
    if isinstance(node, str):
        return "string"
    if isinstance(node, Mapping):
        return "object"
    if isinstance(node, list):
        return "list"
    return type(node).__name__


@dataclass(frozen=True)
class Str(Type):
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    min_length: int = 0
    check_fn: Callable[[str], str | None] | None = None  # returns an error message or None

    def check(self, node: Any, path: str, line: int, w: Walker) -> Any:
        if isinstance(node, bool) or not isinstance(node, (str, int, float)) or not isinstance(node, str):
            w.error(path, line, f"expected a string, got {_type_name(node)}")
            return None
        value = str(node)
        if self.enum is not None and value not in self.enum:
            w.error(path, line, f"unsupported value {value!r}: must be one of {', '.join(self.enum)}")
            return None
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            w.error(path, line, f"invalid value {value!r}: must match {self.pattern}")
            return None
        if len(value) < self.min_length:
            w.error(path, line, "must not be empty")
            return None
        if self.check_fn is not None:
            msg = self.check_fn(value)
            if msg:
                w.error(path, line, msg)
                return None
        return value

    def describe(self) -> str:
        return "string"


@dataclass(frozen=True)
class Int(Type):
    minimum: int | None = None
    maximum: int | None = None

    def check(self, node: Any, path: str, line: int, w: Walker) -> Any:
        if isinstance(node, bool) or not isinstance(node, int):
            w.error(path, line, f"expected an integer, got {_type_name(node)}")
            return None
        if self.minimum is not None and node < self.minimum:
            w.error(path, line, f"must be at least {self.minimum}, got {node}")
            return None
        if self.maximum is not None and node > self.maximum:
            w.error(path, line, f"must be at most {self.maximum}, got {node}")
            return None
        return int(node)


@dataclass(frozen=True)
class Num(Type):
    minimum: float | None = None
    maximum: float | None = None

    def check(self, node: Any, path: str, line: int, w: Walker) -> Any:
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            w.error(path, line, f"expected a number, got {_type_name(node)}")
            return None
        if self.minimum is not None and node < self.minimum:
            w.error(path, line, f"must be at least {self.minimum}, got {node}")
            return None
        if self.maximum is not None and node > self.maximum:
            w.error(path, line, f"must be at most {self.maximum}, got {node}")
            return None
        return float(node)


@dataclass(frozen=True)
class Bool(Type):
    def check(self, node: Any, path: str, line: int, w: Walker) -> Any:
        if not isinstance(node, bool):
            w.error(path, line, f"expected true or false, got {_type_name(node)}")
            return None
        return node

    def describe(self) -> str:
        return "boolean"


@dataclass(frozen=True)
class Duration(Type):
    """A Go duration string; the plain value is seconds as a float."""

    allow_negative: bool = False

    def check(self, node: Any, path: str, line: int, w: Walker) -> Any:
        if not isinstance(node, str):
            w.error(path, line, f"expected a duration string such as '30s' or '1m30s', got {_type_name(node)}")
            return None
        try:
            seconds = parse_duration(node)
        except DurationError as e:
            w.error(path, line, str(e))
            return None
        if seconds < 0 and not self.allow_negative:
            w.error(path, line, f"duration must not be negative, got {node!r}")
            return None
        return seconds

    def describe(self) -> str:
        return "duration"


@dataclass(frozen=True)
class Base64(Type):
    """A base64 string (Secret `data`); the plain value is the decoded bytes."""

    def check(self, node: Any, path: str, line: int, w: Walker) -> Any:
        if not isinstance(node, str):
            w.error(path, line, f"expected a base64 string, got {_type_name(node)}")
            return None
        try:
            return base64.b64decode("".join(node.split()), validate=True)
        except (binascii.Error, ValueError):
            w.error(path, line, "invalid base64 data")
            return None


@dataclass(frozen=True)
class Free(Type):
    """Any YAML value, kept as-is (free-form fields such as pod affinity or JSON log formats)."""

    def check(self, node: Any, path: str, line: int, w: Walker) -> Any:
        return to_plain(node)

    def describe(self) -> str:
        return "any"


@dataclass(frozen=True)
class Map(Type):
    """An object with arbitrary keys, every value of one type (labels, headers)."""

    values: Type = field(default_factory=Str)

    def check(self, node: Any, path: str, line: int, w: Walker) -> Any:
        if not isinstance(node, Mapping):
            w.error(path, line, f"expected an object, got {_type_name(node)}")
            return None
        out: dict[str, Any] = {}
        for key, value in node.items():
            key_line = w.key_line(node, key, line)
            if not isinstance(key, str):
                w.error(f"{path}", key_line, f"keys must be strings, got {_type_name(key)}")
                continue
            checked = self.values.check(value, f"{path}.{key}", w.value_line(node, key, line), w)
            if checked is not None:
                out[key] = checked
        return out

    def describe(self) -> str:
        return "object"


@dataclass(frozen=True)
class List(Type):
    item: Type
    min_items: int = 0
    max_items: int | None = None

    def check(self, node: Any, path: str, line: int, w: Walker) -> Any:
        if not isinstance(node, list):
            w.error(path, line, f"expected a list, got {_type_name(node)}")
            return None
        if len(node) < self.min_items:
            w.error(path, line, f"must have at least {self.min_items} item(s)")
        if self.max_items is not None and len(node) > self.max_items:
            w.error(path, line, f"must have at most {self.max_items} item(s)")
        out = []
        for i, item in enumerate(node):
            checked = self.item.check(item, f"{path}[{i}]", w.item_line(node, i, line), w)
            if checked is not None:
                out.append(checked)
        return out

    def describe(self) -> str:
        return "list"


@dataclass(frozen=True)
class F:
    """One field of an object: its type, whether it is required, and its default."""

    type: Type
    required: bool = False
    default: Any = None


@dataclass(frozen=True)
class Obj(Type):
    """An object with known fields; an unknown field is an error naming the closest known one."""

    fields: Mapping[str, F | Type]
    # Cross-field rules over the plain value: return (relative field, message) pairs.
    rules: tuple[Callable[[dict[str, Any]], list[tuple[str, str]]], ...] = ()

    # Every field as an F, and those `check` must visit even when absent (required, or defaulted): built once,
    # as the loader asks per field of every object (769,000 times for 10,000 HTTPRoutes).
    _specs: dict[str, F] = field(init=False, repr=False, compare=False)
    _absent_checks: tuple[tuple[str, F], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        specs = {name: spec if isinstance(spec, F) else F(spec) for name, spec in self.fields.items()}
        object.__setattr__(self, "_specs", specs)
        absent = tuple((n, s) for n, s in specs.items() if s.required or s.default is not None)
        object.__setattr__(self, "_absent_checks", absent)

    def field_spec(self, name: str) -> F | None:
        return self._specs.get(name)

    def check(self, node: Any, path: str, line: int, w: Walker) -> Any:
        if node is None:
            node = {}
        if not isinstance(node, Mapping):
            w.error(path, line, f"expected an object, got {_type_name(node)}")
            return None
        out: dict[str, Any] = {}
        dropped = False  # a field was written but is invalid, so `out` lacks it
        shortened: list[str] = []  # list fields whose invalid items `out` lacks, so its indices are not the YAML's
        issues_before = len(w.issues)
        for key, value in node.items():
            key_line = w.key_line(node, key, line)
            sub = f"{path}.{key}" if path else str(key)
            spec = self.field_spec(key) if isinstance(key, str) else None
            if spec is None:
                w.error(sub, key_line, f"unknown field{_suggest(str(key), self.fields)}")
                continue
            if value is None and not spec.required:
                continue  # an explicit null reads as "unset", as the Kubernetes API server does
            checked = spec.type.check(value, sub, w.value_line(node, key, line), w)
            if checked is not None:
                out[key] = checked
            else:
                dropped = True
            if isinstance(checked, list) and isinstance(value, list) and len(checked) != len(value):
                shortened.append(sub)  # an invalid item was left out: a rule's `items[i]` would name the wrong one
        for name, spec in self._absent_checks:
            if name in out:
                continue
            if spec.required and name not in node:
                w.error(f"{path}.{name}" if path else name, line, "required field is missing")
            elif spec.default is not None and node.get(name) is None:
                out[name] = _copy(spec.default)  # absent, or an explicit null (read as unset above)
        # Cross-field rules read values. They run in the same pass as the field checks, so every problem is
        # reported at once (a duplicate listener name beside a bad protocol). Where they would read a field
        # that was invalid they could report problems that are not there: not when a field of this object was
        # dropped, and no rule problem on (or above, or below) a path that already has one, or inside a list that
        # lost an invalid item (its indices no longer name the YAML's items).
        invalid = [issue_path for issue_path, _, _ in w.issues[issues_before:]] + shortened
        for rule in self.rules if not dropped else ():
            for rel, message in rule(out):
                where = f"{path}.{rel}" if rel and path else (rel or path)
                if not any(_related(where, other) for other in invalid):
                    w.error(where, w.line_for(node, rel, line), message)
        return out

    def describe(self) -> str:
        return "object"


@dataclass(frozen=True)
class OneOf(Type):
    """A value that may be written in one of several shapes (e.g. a string or an object)."""

    options: tuple[Type, ...]

    def check(self, node: Any, path: str, line: int, w: Walker) -> Any:
        for option in self.options:
            trial = Walker(w.file)
            value = option.check(node, path, line, trial)
            if not trial.issues:
                return value
        names = " or ".join(o.describe() for o in self.options)
        w.error(path, line, f"expected {names}, got {_type_name(node)}")
        return None


def _related(a: str, b: str) -> bool:
    """Whether one field path is the other, or inside it (`spec.x` and `spec.x[0].y`)."""
    return a == b or b.startswith((f"{a}.", f"{a}[")) or a.startswith((f"{b}.", f"{b}["))


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _suggest(key: str, known: Mapping[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.7)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return ""


def to_plain(node: Any) -> Any:
    """ruamel containers and scalars to plain dict/list/str/int/float/bool."""
    if isinstance(node, Mapping):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [to_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return str(node)


class Walker:
    """Collects issues while schema types check a document; knows how to find 1-based lines in ruamel nodes."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.issues: list[Issue] = []
        self.lines: dict[str, int] = {}

    def error(self, path: str, line: int, message: str) -> None:
        self.issues.append((path, line, message))

    @staticmethod
    def key_line(node: Any, key: Any, default: int) -> int:
        try:
            return int(node.lc.key(key)[0]) + 1
        except (AttributeError, KeyError, TypeError):
            return default

    @staticmethod
    def value_line(node: Any, key: Any, default: int) -> int:
        try:
            return int(node.lc.value(key)[0]) + 1
        except (AttributeError, KeyError, TypeError):
            return default

    @staticmethod
    def item_line(node: Any, index: int, default: int) -> int:
        try:
            return int(node.lc.item(index)[0]) + 1
        except (AttributeError, KeyError, TypeError, IndexError):
            return default

    def line_for(self, node: Any, rel: str, default: int) -> int:
        """The line of a (possibly nested, dotted, indexed) relative path inside `node`."""
        current, line = node, default
        for part in re.findall(r"[^.\[\]]+|\[\d+\]", rel or ""):
            if part.startswith("["):
                idx = int(part[1:-1])
                if not isinstance(current, list) or idx >= len(current):
                    break
                line = self.item_line(current, idx, line)
                current = current[idx]
            else:
                if not isinstance(current, Mapping) or part not in current:
                    break
                line = self.key_line(current, part, line)
                current = current[part]
        return line


@dataclass(frozen=True)
class Derive(Type):
    """A type whose plain value is completed after checking, from its own other fields.

    For defaults that depend on a sibling (an `authToken` without `kind` is `SecretRef` when it carries a
    `secretRef`). `derive` gets the checked plain value and returns the value to keep.
    """

    inner: Type
    derive: Callable[[Any], Any]

    def check(self, node: Any, path: str, line: int, w: Walker) -> Any:
        value = self.inner.check(node, path, line, w)
        return None if value is None else self.derive(value)

    def describe(self) -> str:
        return self.inner.describe()
