"""`egressproxy validate`: every problem, one line each; or, when valid, each object's status conditions."""

from __future__ import annotations

from typing import TextIO

from egressproxy.compiler import compile_config
from egressproxy.compiler.ca_material import MINTED_AT_RUN
from egressproxy.config.loader import load_paths
from egressproxy.config.problems import ObjectRef, Problem
from egressproxy.config.resource import Resource
from egressproxy.snapshot import Condition

__all__ = ["validate"]

_CONDITION_ORDER = ("Accepted", "ResolvedRefs", "Programmed")


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.file, p.line, p.path))


def _compile_each_gateway(
    resources: list[Resource], gateway: str | None, secrets_dir: str | None
) -> tuple[list[Problem], dict[ObjectRef, tuple[Condition, ...]], list[str]]:
    """Compile for the chosen gateway, or (validating a folder of several) for each EgressGateway in turn.

    Problems are the union; an object's conditions come from the compile where they are best (attached to
    its own gateway), so a route of gateway A is not reported as unattached while B is compiled.
    """
    names: list[str | None] = (
        [gateway] if gateway else [f"{r.namespace}/{r.name}" for r in resources if r.kind == "EgressGateway"]
    )
    problems: dict[str, Problem] = {}
    statuses: dict[ObjectRef, tuple[Condition, ...]] = {}
    notes: list[str] = []
    for name in names or [None]:  # no gateway at all: one compile, which reports that
        compiled = compile_config(resources, gateway_name=name, secrets_dir=secrets_dir)
        if compiled.snapshot is not None:
            gw = compiled.snapshot.gateway.ref
            for listener, conditions in compiled.listener_statuses.items():
                if any(c.message == MINTED_AT_RUN for c in conditions):
                    notes.append(f"{gw} listener {listener}: {MINTED_AT_RUN}")
        for problem in compiled.problems:
            problems.setdefault(str(problem), problem)
        for ref, conditions in compiled.statuses.items():
            if ref not in statuses or _score(conditions) > _score(statuses[ref]):
                statuses[ref] = conditions
    return list(problems.values()), statuses, notes


def _score(conditions: tuple[Condition, ...]) -> int:
    return sum(1 for c in conditions if c.ok)


def validate(paths: list[str], *, secrets_dir: str | None, gateway: str | None, out: TextIO) -> int:
    loaded = load_paths(paths)
    if loaded.problems:
        for problem in _sorted(loaded.problems):
            out.write(f"{problem}\n")
        return 1
    problems, statuses, notes = _compile_each_gateway(loaded.resources, gateway, secrets_dir)
    if problems:
        for problem in _sorted(problems):
            out.write(f"{problem}\n")
        return 1
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
    for note in notes:
        out.write(f"{note}\n")
    return 0
