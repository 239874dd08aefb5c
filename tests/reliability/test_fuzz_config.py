"""Fuzzing the configuration loader (issue 14, item 8) through the entry `egressproxy validate` uses
(egressproxy/commands/validate.py): any YAML text, any structure in a valid envelope, and the shipped examples
with one part replaced by anything give a clean problem list (exit 1) or a valid config (exit 0), never a
traceback. Problems are one `file:line: ...` line each."""

from __future__ import annotations

import io
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from egressproxy.commands.validate import validate

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "config").rglob("*.yaml"))
PROBLEM = re.compile(r"^.+:\d+: .+$")


def run_validate(text: str, beside: Path | None = None) -> tuple[int, str]:
    """`validate` on `text` as one file; `beside`: an example folder whose other files (a GeoIP database the
    config names by a relative path) are copied next to it."""
    with tempfile.TemporaryDirectory() as tmp:
        if beside is not None:
            shutil.copytree(beside, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.yaml", "*.md"))
        path = Path(tmp) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        out = io.StringIO()
        code = validate([str(path)], secrets_dir=None, gateway=None, out=out)
    return code, out.getvalue()


def assert_clean(text: str, beside: Path | None = None) -> None:
    code, out = run_validate(text, beside)
    assert code in (0, 1), out
    if code == 1:
        lines = out.splitlines()
        assert lines and all(PROBLEM.match(line) for line in lines), out


def _documents() -> list[dict[str, Any]]:
    docs = []
    for path in EXAMPLES:
        docs += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return docs


DOCUMENTS = _documents()
KINDS = sorted({d["kind"] for d in DOCUMENTS if isinstance(d.get("kind"), str)})
API_VERSIONS = sorted({d["apiVersion"] for d in DOCUMENTS if isinstance(d.get("apiVersion"), str)})


def _keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from _keys(v)
    elif isinstance(node, list):
        for v in node:
            yield from _keys(v)


FIELD_NAMES = sorted(set(_keys(DOCUMENTS)))
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["", "*", "/", "0s", "1h", "-1", "Header", "Terminate", "allow-all",
                                           "*.example.com", "[::1]", "10.0.0.0/8", "egress-ca", "(", "a" * 300]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=20,
)


@st.composite
def envelopes(draw: st.DrawFn) -> str:
    docs = []
    for _ in range(draw(st.integers(1, 3))):
        docs.append({
            "apiVersion": draw(st.sampled_from(API_VERSIONS)),
            "kind": draw(st.sampled_from(KINDS)),
            "metadata": {"name": draw(st.sampled_from(["eg", "r", "p", "s", "x"])),
                         **draw(st.dictionaries(st.sampled_from(["namespace", "annotations", "labels"]), VALUES, max_size=1))},
            "spec": draw(st.dictionaries(st.sampled_from(FIELD_NAMES), VALUES, max_size=6)),
        })
    return yaml.safe_dump_all(docs, allow_unicode=True)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(node) if isinstance(node, dict) else list(node)
    copy[path[0]] = _replace(node[path[0]], path[1:], value)  # type: ignore[index]
    return copy


@st.composite
def mutated_examples(draw: st.DrawFn) -> tuple[Path, str]:
    """One example folder's documents with one value, anywhere, replaced by anything."""
    folder = draw(st.sampled_from(sorted({p.parent for p in EXAMPLES})))
    docs = [d for p in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d is not None]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(docs) - 1))
        path = draw(st.sampled_from(list(_paths(docs[i]))))
        docs[i] = _replace(docs[i], path, draw(VALUES))
    return folder, yaml.safe_dump_all(docs, allow_unicode=True)


YAML_TEXT = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(["apiVersion: ", "kind: ", "metadata:", "  name: x", "spec:", "  ", "- ", "---", "&a ",
                              "*a", "!!python/object:os.system", "{", "}", "[", "]", ": ", "'", '"', "\t", "\n", "? ",
                              "<<: *a", "!!binary |", "%YAML 1.1", "@", "`", "\ufeff", "\x00", "~", ".inf", "0x1F",
                              "2001-01-01", "&b [*b]"]), max_size=30).map("".join),
)


@FUZZ
@given(YAML_TEXT)
@example("a: &a [*a, *a]\n")
@example("!0")  # found by hypothesis: a tagged scalar document, whose position has no line
@example("\x1f")  # found by hypothesis: the problem text ran over two lines
@example("- " * 500 + "x")
@example("[" * 2000)
def test_any_yaml_text_is_problems_or_valid(text: str) -> None:
    assert_clean(text)


@FUZZ
@given(envelopes())
def test_any_structure_in_a_valid_envelope_is_problems_or_valid(text: str) -> None:
    assert_clean(text)


@settings(FUZZ, max_examples=150)
@given(mutated_examples())
def test_an_example_with_any_part_replaced_is_problems_or_valid(case: tuple[Path, str]) -> None:
    assert_clean(case[1], beside=case[0])


def test_every_example_folder_is_valid_as_shipped() -> None:
    """The control for the mutation test: unmutated, every folder passes (so a problem above is the mutation's)."""
    for folder in sorted({p.parent for p in EXAMPLES}):
        text = "---\n".join(p.read_text() for p in sorted(folder.glob("*.yaml")))
        code, out = run_validate(text, beside=folder)
        assert code == 0, out


# Found by hypothesis (test_an_example_with_any_part_replaced_is_problems_or_valid): a document whose
# `metadata.name` is null passed the required-field check and then failed with a KeyError.
NULL_NAME = """apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: null}
spec: {listeners: [{name: http, protocol: HTTP}]}
"""


def test_a_null_metadata_name_is_a_missing_name() -> None:
    code, out = run_validate(NULL_NAME)
    assert code == 1 and out.strip().endswith("EgressGateway/default/?: metadata.name: required field is missing"), out


def test_a_problem_is_one_line_whatever_the_config_quotes() -> None:
    """Found by hypothesis: a key holding a record separator (U+001E) split a problem line in two."""
    code, out = run_validate('apiVersion: clrk.apoxy.dev/v1alpha1\nkind: EgressGateway\nmetadata:\n  name: eg\n'
                             '  "\\x1e\\e[2J": x\nspec: {listeners: [{name: http, protocol: HTTP}]}\n')
    assert code == 1 and len(out.splitlines()) == 1 and "\\x1e\\x1b[2J" in out, out


DEEP = "(" * 3000 + "a" + ")" * 3000


def test_a_regular_expression_nested_too_deeply_is_a_problem() -> None:
    """Found while fuzzing the guard compiler: re and regex recurse per group, and a few thousand groups raised
    RecursionError out of `validate`, for an HTTPRoute path and a prompt-guard pattern alike."""
    text = f"""apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec: {{listeners: [{{name: http, protocol: HTTP}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r}}
spec:
  parentRefs: [{{name: eg}}]
  rules:
  - matches: [{{path: {{type: RegularExpression, value: '{DEEP}'}}}}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: p}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}}]
  ai: {{promptGuard: {{request: {{regex: {{matches: [{{pattern: '{DEEP}'}}]}}}}}}}}
"""
    code, out = run_validate(text)
    assert code == 1, out
    lines = out.splitlines()
    assert len(lines) == 2 and all("nested too deeply" in line for line in lines), out
