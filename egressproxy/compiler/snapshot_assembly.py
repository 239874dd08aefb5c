"""A finished compilation frozen into the immutable `Snapshot` the data plane serves, with its compiled policies."""

from __future__ import annotations

from types import MappingProxyType

from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.compiled_forms import PolicyMaterial, link_compiled_policies
from egressproxy.config.problems import ObjectRef
from egressproxy.snapshot import Condition, Gateway, PolicyIndex, Snapshot


def assemble_snapshot(
    comp: Compilation,
    gateway: Gateway,
    statuses: dict[ObjectRef, tuple[Condition, ...]],
    listener_statuses: dict[str, tuple[Condition, ...]],
    material: PolicyMaterial | None = None,
) -> Snapshot:
    backends = MappingProxyType(dict(comp.backends))
    policies = PolicyIndex(MappingProxyType({k: tuple(v) for k, v in comp.attached.items()}))
    return Snapshot(
        gateway=gateway,
        gateways=tuple(r.ref for r in comp.of_kind("EgressGateway")),
        backends=backends,
        routes=MappingProxyType(dict(sorted(comp.routes.items()))),
        secrets=MappingProxyType(dict(comp.secrets)),
        policies=policies,
        statuses=MappingProxyType(statuses),
        listener_statuses=MappingProxyType(listener_statuses),
        direct_responses=MappingProxyType(dict(comp.direct_responses)),
        generation=comp.generation,
        files=comp.files,
        unsupported=MappingProxyType(dict(sorted(comp.unsupported.items()))),
        compiled=link_compiled_policies(material or PolicyMaterial(), gateway, backends, policies),
        _secret_values=frozenset(comp.secret_values),
    )
