"""`compile_config`: the passes in the order their references need, and the `CompileResult` they add up to.

Secrets, direct responses and backends come first (everything refers to them); then the served gateway and its
listener shells; then policies, before routes so an EgressDenyPolicy reaches its routes; then the gateway with
its route tables; then every policy's Secret material parsed (what does not parse is a problem), and statuses
last, once every problem is known. The parsed material is indexed into the snapshot's `CompiledPolicies`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from egressproxy.compiler.backends import compile_backends
from egressproxy.compiler.compilation import Compilation, GatewayCASource
from egressproxy.compiler.compiled_forms import parse_policy_material
from egressproxy.compiler.direct_responses import compile_direct_responses
from egressproxy.compiler.gateway import check_gateway_refs, compile_gateway
from egressproxy.compiler.gateway_selection import select_served_gateway
from egressproxy.compiler.listeners import compile_listener_shells
from egressproxy.compiler.mounted_secrets import MountedSecrets, read_secrets_dir
from egressproxy.compiler.policies import compile_policies, report_extension_only_policies
from egressproxy.compiler.programmed import finish_statuses
from egressproxy.compiler.routes import compile_routes
from egressproxy.compiler.secret_refs import collect_secrets
from egressproxy.compiler.snapshot_assembly import assemble_snapshot
from egressproxy.config.problems import ObjectRef, Problem
from egressproxy.config.resource import Resource
from egressproxy.snapshot import Condition, Snapshot


@dataclass
class CompileResult:
    snapshot: Snapshot | None
    problems: list[Problem]
    statuses: dict[ObjectRef, tuple[Condition, ...]]
    listener_statuses: dict[str, tuple[Condition, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the snapshot may be served: a gateway was selected and nothing is wrong."""
        return self.snapshot is not None and not self.problems


def compile_config(
    resources: Sequence[Resource],
    gateway_name: str | None = None,
    secrets_dir: str | os.PathLike[str] | None = None,
    generation: int = 1,
    *,
    mounted: MountedSecrets | None = None,
    files: Iterable[str] | None = None,
    gateway_cas: GatewayCASource | None = None,
) -> CompileResult:
    """Compile validated resources. `mounted` (from `read_secrets_dir`) spares reading `secrets_dir` here.

    `gateway_cas` reads or mints the CA of a Terminate listener without caCertRef (`egressproxy run`); without it
    (validate, explain) such a listener compiles with no CA yet, to be minted at run, and nothing is written."""
    if mounted is None and secrets_dir is not None:
        mounted = read_secrets_dir(secrets_dir)
    return _run(Compilation(resources, gateway_name, mounted or MountedSecrets(), generation, files, gateway_cas))


def _run(comp: Compilation) -> CompileResult:
    collect_secrets(comp)
    compile_direct_responses(comp)
    compile_backends(comp)
    select_served_gateway(comp)
    if comp.served is not None:
        compile_listener_shells(comp, comp.served)
    for other in comp.of_kind("EgressGateway"):
        if other is not comp.served:
            check_gateway_refs(comp, other)
    compile_policies(comp)
    compile_routes(comp)
    report_extension_only_policies(comp)
    gateway = compile_gateway(comp, comp.served) if comp.served is not None else None
    material = parse_policy_material(comp)
    finish_statuses(comp, gateway)
    statuses = comp.status.frozen()
    listener_statuses = {
        name: book.frozen().get(ObjectRef("Listener", "", name), ()) for name, book in comp.listener_status.items()
    }
    snapshot = assemble_snapshot(comp, gateway, statuses, listener_statuses, material) if gateway is not None else None
    return CompileResult(snapshot, _dedupe(comp.problems), statuses, listener_statuses)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
