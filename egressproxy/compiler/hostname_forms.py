"""Configured hostnames in the form the data plane compares them: canonical, keeping a leading `*.` wildcard."""

from __future__ import annotations

from collections.abc import Sequence

from egressproxy.compiler.compilation import Compilation
from egressproxy.config.resource import Resource
from egressproxy.hostnames import InvalidHostname, canonical_host


def canonical_wildcard(name: str) -> str:
    """Canonical form of a route hostname, keeping a leading `*.` wildcard."""
    if name.startswith("*."):
        return "*." + canonical_host(name[2:])
    return canonical_host(name)


def canonical_or_raw(host: str) -> str:
    try:
        return canonical_host(host)
    except InvalidHostname:
        return host


def route_hostnames(comp: Compilation, res: Resource, path: str, names: Sequence[str]) -> tuple[str, ...]:
    """The distinct canonical hostnames at `path`; an invalid one is a problem and is left out."""
    out: list[str] = []
    for i, name in enumerate(names):
        try:
            canonical = canonical_wildcard(name)
        except InvalidHostname as e:
            comp.problem(res, f"{path}[{i}]", str(e))
            continue
        if canonical not in out:
            out.append(canonical)
    return tuple(out)
