"""Reading YAML files and folders into validated Resources, reporting every problem at once."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from egressproxy.config.fast_yaml import Unsupported, read_documents
from egressproxy.config.kinds import KINDS, KindSchema
from egressproxy.config.problems import Problem
from egressproxy.config.resource import Resource
from egressproxy.config.schema import Free, Int, Map, Obj, Str, Walker

__all__ = ["LoadResult", "load_paths", "load_text", "config_files"]

YAML_SUFFIXES = (".yaml", ".yml")


class _ConfigConstructor(RoundTripConstructor):
    """Round-trip loading, except that timestamps stay strings.

    Kubernetes turns YAML into JSON before validating, so an unquoted `creationTimestamp: 2024-01-01T00:00:00Z`
    (as `kubectl get -o yaml` writes it) is a string field, never a date.
    """


_ConfigConstructor.add_constructor("tag:yaml.org,2002:timestamp", RoundTripConstructor.construct_yaml_str)

_METADATA = Obj(
    {
        "name": Str(min_length=1, pattern=r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"),
        "namespace": Str(pattern=r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"),
        "labels": Map(Str()),
        "annotations": Map(Str()),
        # Fields a `kubectl get -o yaml` export carries; accepted and ignored.
        "uid": Str(),
        "resourceVersion": Str(),
        "generation": Int(),
        "creationTimestamp": Str(),
        "generateName": Str(),
        "finalizers": Free(),
        "ownerReferences": Free(),
        "managedFields": Free(),
    }
)


@dataclass
class LoadResult:
    resources: list[Resource] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def config_files(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[Problem]]:
    """Expand files and folders (recursively, `*.yaml` and `*.yml`, sorted) into a list of files."""
    files: list[str] = []
    problems: list[Problem] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(
                str(f) for f in path.rglob("*") if f.suffix in YAML_SUFFIXES and f.is_file()
            )
            if not found:
                problems.append(Problem(str(path), 0, "-", "-", "folder holds no *.yaml or *.yml file"))
            files.extend(found)
        elif path.is_file():
            files.append(str(path))
        else:
            problems.append(Problem(str(path), 0, "-", "-", "no such file or folder"))
    return files, problems


# Far deeper than any Kubernetes object (a Gateway API route is under 10 levels) and far from the ~1000 frames
# Python allows the loader and compiler, which recurse per level.
MAX_DEPTH = 64


def load_paths(paths: Iterable[str | os.PathLike[str]], round_trip: bool = False) -> LoadResult:
    """Every object of every file; `round_trip` keeps comments in `Resource.raw` (slow: see `load_text`)."""
    files, problems = config_files(paths)
    result = LoadResult(problems=problems, files=files)
    for f in files:
        try:
            text = Path(f).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            result.problems.append(Problem(f, 0, "-", "-", f"cannot read: {e}"))
            continue
        sub = load_text(text, f, round_trip)
        result.resources.extend(sub.resources)
        result.problems.extend(sub.problems)
    _check_duplicates(result)
    return result


def load_text(text: str, file: str = "<string>", round_trip: bool = False) -> LoadResult:
    """The objects of one file's text. Read with libyaml (`fast_yaml`) unless it uses what only ruamel reads
    (and for any YAML error, so problems keep ruamel's wording) or `round_trip` asks for comments kept."""
    result = LoadResult(files=[file])
    try:
        docs, depth_checked = _read_yaml(text, round_trip)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        col = mark.column + 1 if mark is not None else 0
        what = " ".join(" ".join(str(x).split()) for x in (e.context, e.problem) if x) or "invalid YAML"
        result.problems.append(Problem(file, line, "-", "-", f"invalid YAML at column {col}: {what}"))
        return result
    except YAMLError as e:
        # One line per problem: the library's text goes on with `in "<unicode string>", position 0` on the next
        # (found by fuzzing: a control character in the file)
        result.problems.append(Problem(file, 0, "-", "-", "invalid YAML: " + " ".join(str(e).split())))
        return result
    except RecursionError:  # the YAML library's parser recurses once per level (found by fuzzing: "[" * 2000)
        result.problems.append(Problem(file, 0, "-", "-", f"invalid YAML: nested deeper than {MAX_DEPTH} levels"))
        return result
    for doc in docs:
        if doc is None:
            continue  # an empty document between two `---`
        if not depth_checked and _deeper_than(doc, MAX_DEPTH):
            kind, ns, name = _identity(doc) if isinstance(doc, Mapping) else ("-", "", "-")
            obj = f"{kind}/{ns}/{name}" if ns else kind
            line = _document_line(doc)
            result.problems.append(Problem(file, line, obj, "-", f"nested deeper than {MAX_DEPTH} levels"))
            continue
        resource, problems = _load_document(doc, file)
        result.problems.extend(problems)
        if resource is not None:
            result.resources.append(resource)
    return result


def _read_yaml(text: str, round_trip: bool) -> tuple[list[Any], bool]:
    """The documents, and whether their depth is known to be within MAX_DEPTH (`read_documents` leaves deeper
    texts to ruamel, so `_deeper_than` need not walk them again)."""
    if not round_trip:
        try:
            return read_documents(text, MAX_DEPTH), True
        except Unsupported:
            pass
    yaml = YAML(typ="rt")
    yaml.Constructor = _ConfigConstructor
    yaml.allow_duplicate_keys = False
    return list(yaml.load_all(text)), False


def _document_line(doc: Any) -> int:
    """The line a document starts on; a tagged scalar (`!0`) has a position whose line is None (found by
    fuzzing), a plain scalar none at all."""
    line = getattr(getattr(doc, "lc", None), "line", None)
    return line + 1 if isinstance(line, int) else Walker.item_line([], 0, 1)


def _deeper_than(doc: Any, limit: int) -> bool:
    """Whether `doc` nests more than `limit` mappings and lists, walked without recursion: every later step
    (schema walk, copies, compile) recurses per level, so a document deep enough to exhaust Python's stack is
    a problem here rather than a RecursionError there (found by fuzzing)."""
    stack = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return False


def _identity(doc: Mapping[str, Any]) -> tuple[str, str, str]:
    """Kind, namespace and name for problem lines, whatever shape the document has."""
    kind = doc.get("kind")
    meta = doc.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name, ns = meta.get("name"), meta.get("namespace")
    return (
        kind if isinstance(kind, str) else "?",
        ns if isinstance(ns, str) else "default",
        name if isinstance(name, str) else "?",
    )


def _load_document(doc: Any, file: str) -> tuple[Resource | None, list[Problem]]:
    line = _document_line(doc)
    if not isinstance(doc, Mapping):
        return None, [Problem(file, line, "-", "-", "a document must be a Kubernetes object (a mapping)")]
    kind, ns, name = _identity(doc)
    obj = f"{kind}/{ns}/{name}"
    w = Walker(file)

    api_version = doc.get("apiVersion")
    if not isinstance(api_version, str):
        w.error("apiVersion", line, "required field is missing")
    if not isinstance(doc.get("kind"), str):
        w.error("kind", line, "required field is missing")
    schema = _find_kind(api_version, doc.get("kind"), w, doc, line)

    meta = _METADATA.check(doc.get("metadata"), "metadata", w.value_line(doc, "metadata", line), w)
    # `name: null` counts as missing (found by fuzzing: it passed here and failed below with a KeyError)
    if not isinstance(doc.get("metadata"), Mapping) or doc["metadata"].get("name") is None:
        w.error("metadata.name", w.key_line(doc, "metadata", line), "required field is missing")

    spec: dict[str, Any] = {}
    if schema is not None:
        top_fields = set(schema.top_fields) | {"apiVersion", "kind", "metadata", "status"}
        for key in doc:
            if key not in top_fields:
                w.error(str(key), w.key_line(doc, key, line), "unknown field")
        spec = schema.check_body(doc, line, w)

    problems = [Problem(file, ln, obj, path, msg) for path, ln, msg in w.issues]
    if problems or schema is None or not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        return None, problems
    return (
        Resource(
            api_version=str(api_version),
            kind=schema.kind,
            namespace=meta.get("namespace", "default"),
            name=meta["name"],
            labels=meta.get("labels", {}),
            annotations=meta.get("annotations", {}),
            spec=spec,
            file=file,
            line=line,
            raw=doc,
        ),
        [],
    )


def _find_kind(api_version: Any, kind: Any, w: Walker, doc: Any, line: int) -> KindSchema | None:
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return None
    schema = KINDS.get(kind)
    if schema is None:
        w.error("kind", w.value_line(doc, "kind", line), f"unknown kind {kind!r}{_suggest_kind(kind)}")
        return None
    if api_version not in schema.api_versions:
        w.error(
            "apiVersion",
            w.value_line(doc, "apiVersion", line),
            f"{kind} is served as {' or '.join(schema.api_versions)}, not {api_version!r}",
        )
        return None
    return schema


def _suggest_kind(kind: str) -> str:
    """` (did you mean 'HTTPRoute'?)` for a kind that differs from a known one in case or by a typo."""
    by_lower = {known.lower(): known for known in KINDS}
    close = difflib.get_close_matches(kind.lower(), list(by_lower), n=1, cutoff=0.8)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def _check_duplicates(result: LoadResult) -> None:
    seen: dict[tuple[str, str, str], Resource] = {}
    kept: list[Resource] = []
    for r in result.resources:
        first = seen.get(r.key)
        if first is not None:
            result.problems.append(
                Problem(r.file, r.line, str(r.ref), "metadata.name", f"duplicate object, first defined at {first.file}:{first.line}")
            )
            continue
        seen[r.key] = r
        kept.append(r)
    result.resources = kept
