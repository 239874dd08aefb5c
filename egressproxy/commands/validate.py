"""`egressproxy validate`: every problem, one line each; or, when valid, each object's status conditions."""

from __future__ import annotations

from typing import TextIO

from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_paths
from egressproxy.config.problems import Problem

__all__ = ["validate"]

_CONDITION_ORDER = ("Accepted", "ResolvedRefs", "Programmed")


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.file, p.line, p.path))


def validate(paths: list[str], *, secrets_dir: str | None, gateway: str | None, out: TextIO) -> int:
    loaded = load_paths(paths)
    if loaded.problems:
        for problem in _sorted(loaded.problems):
            out.write(f"{problem}\n")
        return 1
    compiled = compile_config(loaded.resources, gateway_name=gateway, secrets_dir=secrets_dir)
    if compiled.problems:
        for problem in _sorted(list(compiled.problems)):
            out.write(f"{problem}\n")
        return 1
    statuses = compiled.statuses
    width = max((len(str(ref)) for ref in statuses), default=10)
    out.write(f"{len(loaded.resources)} object(s) in {len(loaded.files)} file(s): valid\n")
    for ref in sorted(statuses, key=lambda r: (r.kind, r.namespace, r.name)):
        conditions = {c.type: c for c in statuses[ref]}
        cells = []
        for kind in (*_CONDITION_ORDER, *sorted(set(conditions) - set(_CONDITION_ORDER))):
            c = conditions.get(kind)
            if c is not None:
                cells.append(f"{kind}={c.status}" + (f" ({c.reason}: {c.message})" if not c.ok and c.message else ""))
        out.write(f"{str(ref):<{width}}  {'  '.join(cells)}\n")
    return 0
