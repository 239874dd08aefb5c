"""A finished compilation frozen into the immutable `Snapshot` the data plane serves."""

from __future__ import annotations

from types import MappingProxyType

from egressproxy.compiler.compilation import Compilation
from egressproxy.config.problems import ObjectRef
from egressproxy.snapshot import Condition, Gateway, PolicyIndex, Snapshot


def assemble_snapshot(
    comp: Compilation,
    gateway: Gateway,
    statuses: dict[ObjectRef, tuple[Condition, ...]],
    listener_statuses: dict[str, tuple[Condition, ...]],
) -> Snapshot:
    return Snapshot(
        gateway=gateway,
        gateways=tuple(r.ref for r in comp.of_kind("EgressGateway")),
        backends=MappingProxyType(dict(comp.backends)),
        routes=MappingProxyType(dict(sorted(comp.routes.items()))),
        secrets=MappingProxyType(dict(comp.secrets)),
        policies=PolicyIndex(MappingProxyType({k: tuple(v) for k, v in comp.attached.items()})),
        statuses=MappingProxyType(statuses),
        listener_statuses=MappingProxyType(listener_statuses),
        direct_responses=MappingProxyType(dict(comp.direct_responses)),
        generation=comp.generation,
        files=comp.files,
        unsupported=MappingProxyType(dict(sorted(comp.unsupported.items()))),
        _secret_values=frozenset(comp.secret_values),
    )
