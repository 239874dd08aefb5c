"""libyaml reading (egressproxy/config/fast_yaml.py) gives what ruamel's round-trip reading gave: the same values
and the same line and column for every key, value and item; what it cannot read so is left to ruamel."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from egressproxy.config import loader
from egressproxy.config.fast_yaml import LinedMap, Unsupported, read_documents
from egressproxy.config.loader import MAX_DEPTH, load_text
from egressproxy.config.schema import to_plain

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted(p for p in (ROOT / "config").rglob("*") if p.suffix in (".yaml", ".yml"))


def ruamel_documents(text: str) -> list[Any]:
    yaml = YAML(typ="rt")
    yaml.Constructor = loader._ConfigConstructor
    yaml.allow_duplicate_keys = False
    return list(yaml.load_all(text))


def assert_same(fast: Any, slow: Any, where: str = "") -> None:
    """Same plain value, same type family, and the same (line, column) for the node and each key/value/item."""
    if isinstance(slow, Mapping):
        assert isinstance(fast, LinedMap), where
        assert (fast.lc.line, fast.lc.col) == (slow.lc.line, slow.lc.col), where
        assert list(fast) == list(slow), where
        for key in slow:
            assert fast.lc.key(key) == tuple(slow.lc.key(key)), f"{where}.{key} (key)"
            if slow[key] is not None or fast.lc.value(key) != fast.lc.key(key)[:1] + (fast.lc.value(key)[1],):
                # (an empty value is placed on its key's line: see test_an_empty_value_is_on_its_keys_line)
                assert fast.lc.value(key) == tuple(slow.lc.value(key)), f"{where}.{key} (value)"
            assert_same(fast[key], slow[key], f"{where}.{key}")
    elif isinstance(slow, list):
        assert isinstance(fast, list) and len(fast) == len(slow), where
        assert (fast.lc.line, fast.lc.col) == (slow.lc.line, slow.lc.col), where
        for i, item in enumerate(slow):
            assert fast.lc.item(i) == tuple(slow.lc.item(i)), f"{where}[{i}]"
            assert_same(fast[i], item, f"{where}[{i}]")
    elif isinstance(slow, float) and math.isnan(slow):
        assert isinstance(fast, float) and math.isnan(fast), where
    else:
        assert type(to_plain(fast)) is type(to_plain(slow)), where
        assert to_plain(fast) == to_plain(slow), where


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_config_is_read_fast_and_as_ruamel_reads_it(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    fast = read_documents(text, MAX_DEPTH)
    slow = ruamel_documents(text)
    assert len(fast) == len(slow)
    for f, s in zip(fast, slow, strict=True):
        assert_same(f, s)


SCALARS = [
    "010", "0o17", "1_000", "0x1F", "0b101", "+5", "-0", "-12", "08", "1e3", "12e03", ".5", "1.", "-1.5e-3",
    ".inf", "-.Inf", "+.INF", ".nan", ".NaN", "true", "True", "FALSE", "yes", "no", "on", "off", "y", "~", "null",
    "Null", "NULL", "", "2024-01-01", "2024-01-01T00:00:00Z", "1:20", "0x", "0o", "_1", "1_", "'5'", '"true"',
    '"multi\\nline"', "|\n  block\n  text", ">\n  folded\n  text", "!!str 5", "!!int '7'", "!!float '2.5'",
    "!!null ''", "plain text: not a key", "'quoted: colon'", "-", "- ", "[a, 1, {b: 2.5}]", "{}", "[]",
    "#notacomment", "v#1", "1.0.0", "0.1_0", "1__0",
]


@pytest.mark.parametrize("scalar", SCALARS)
def test_scalars_read_as_ruamel_reads_them_or_left_to_it(scalar: str) -> None:
    text = f"k: {scalar}\nafter: 1\n"
    try:
        slow = ruamel_documents(text)
    except YAMLError:
        with pytest.raises(Unsupported):  # ruamel words the problem, as before
            read_documents(text, MAX_DEPTH)
        return
    try:
        fast = read_documents(text, MAX_DEPTH)
    except Unsupported:
        return  # ruamel reads it, as before
    assert_same(fast[0], slow[0])


@pytest.mark.parametrize("scalar", ["5", "'5'", "1.5", "true", "~", "2024-01-01", "0x1F", ".inf", "x y"])
def test_common_scalars_take_the_fast_path(scalar: str) -> None:
    read_documents(f"k: {scalar}\n", MAX_DEPTH)


@pytest.mark.parametrize(
    "text",
    [
        "a: &x 1\nb: *x\n",  # alias
        "base: &b {x: 1}\nk:\n  <<: *b\n",  # merge key
        "kind: Secret\nkind: Secret\n",  # duplicate key: ruamel words the error
        "k: !!binary aGk=\n",
        "k: !custom 5\n",
        "k: !!bool yes\n",  # YAML 1.1 spelling under an explicit tag
        "%YAML 1.1\n---\nk: yes\n",
        "? [a, b]\n: c\n",  # a complex key
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s\n",  # a syntax error: ruamel words it
        "k: =\n",  # ruamel's `value` tag
        "k: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n",
    ],
)
def test_what_is_left_to_ruamel(text: str) -> None:
    with pytest.raises(Unsupported):
        read_documents(text, MAX_DEPTH)


def test_depth_limit_counts_as_the_loader_does() -> None:
    """A node at MAX_DEPTH is read; one level more is not, exactly where `_deeper_than` would report it."""
    at_limit = "k: " + "[" * (MAX_DEPTH - 1) + "x" + "]" * (MAX_DEPTH - 1) + "\n"
    doc = read_documents(at_limit, MAX_DEPTH)[0]
    assert not loader._deeper_than(doc, MAX_DEPTH)
    deeper = "k: " + "[" * MAX_DEPTH + "x" + "]" * MAX_DEPTH + "\n"
    assert loader._deeper_than(ruamel_documents(deeper)[0], MAX_DEPTH)
    with pytest.raises(Unsupported):
        read_documents(deeper, MAX_DEPTH)


SECRET = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}  # a comment\ndata: {k: aGk=}\n"


def test_the_loader_reads_fast_and_keeps_comments_only_when_asked() -> None:
    fast = load_text(SECRET, "s.yaml")
    assert fast.ok and isinstance(fast.resources[0].raw, LinedMap)
    kept = load_text(SECRET, "s.yaml", round_trip=True)
    assert kept.ok and isinstance(kept.resources[0].raw, CommentedMap)
    assert fast.resources[0].spec == kept.resources[0].spec


def test_a_problem_in_a_fast_read_document_names_its_line() -> None:
    text = SECRET + "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: t\ndata:\n  k: '!!!'\n"
    result = load_text(text, "s.yaml")
    assert [(p.line, p.path) for p in result.problems] == [(11, "data.k")]


def test_an_empty_value_is_on_its_keys_line() -> None:
    """ruamel placed an empty value at the next token (often the next key's line); libyaml on its key's line,
    which is where a problem about it belongs."""
    doc = read_documents("k:\n# comment\nz: 1\n", MAX_DEPTH)[0]
    assert doc["k"] is None and doc.lc.value("k")[0] == 0


def test_field_names_are_shared_between_documents() -> None:
    """Keys are interned: 10,000 routes hold one `name` string, not 10,000 (measured: ~10 MiB less RSS)."""
    first, second = read_documents("metadata: {name: a}\n---\nmetadata: {name: b}\n", MAX_DEPTH)
    (k1,), (k2,) = first["metadata"].keys(), second["metadata"].keys()
    assert k1 == k2 == "name" and k1 is k2
