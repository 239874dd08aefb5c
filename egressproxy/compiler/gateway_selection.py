"""Which EgressGateway is served: the one named on the command line, else the only one in the configuration."""

from __future__ import annotations

from collections.abc import Sequence

from egressproxy.compiler.compilation import Compilation
from egressproxy.config.problems import Problem
from egressproxy.config.resource import Resource


def select_gateway(gateways: Sequence[Resource], wanted: str | None) -> tuple[Resource | None, str | None]:
    """The served EgressGateway: `wanted` as `name` or `namespace/name`, else the only one; else an error."""
    if wanted:
        ns, _, name = wanted.rpartition("/")
        found = [g for g in gateways if g.name == name and (not ns or g.namespace == ns)]
        if len(found) == 1:
            return found[0], None
        names = ", ".join(f"{g.namespace}/{g.name}" for g in gateways) or "none"
        if not found:
            return None, f'EgressGateway "{wanted}" not found (the configuration has: {names})'
        return None, f'EgressGateway name "{wanted}" is ambiguous: write namespace/name (one of {names})'
    if len(gateways) == 1:
        return gateways[0], None
    if not gateways:
        return None, "the configuration has no EgressGateway"
    names = ", ".join(f"{g.namespace}/{g.name}" for g in gateways)
    return None, f"the configuration has several EgressGateways ({names}): choose one with --gateway NAME"


def select_served_gateway(comp: Compilation) -> None:
    """Set `comp.served`; when none can be chosen, the reason is a problem where the choice went wrong."""
    gateways = comp.of_kind("EgressGateway")
    chosen, error = select_gateway(gateways, comp.gateway_name)
    comp.served = chosen
    if error is None:
        return
    if comp.gateway_name:
        comp.problems.append(Problem("<command line>", 0, "-", "--gateway", error))
    elif gateways:
        second = gateways[1]
        comp.problems.append(Problem(second.file, second.line, str(second.ref), "-", error))
    else:
        comp.problems.append(Problem(comp.files[0] if comp.files else "<config>", 0, "-", "-", error))
