"""One compile pass in progress: the resources by kind, and everything resolved from them so far.

Each pass module reads and extends one `Compilation`; `pipeline` runs the passes in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from egressproxy.compiler.listener_shell import ListenerShell
from egressproxy.compiler.mounted_secrets import MountedSecrets
from egressproxy.compiler.status import StatusBook
from egressproxy.config.problems import ObjectRef, Problem
from egressproxy.config.resource import Resource
from egressproxy.snapshot import AttachedPolicy, Backend, DenyAction, DirectResponse, Route, SecretData

if TYPE_CHECKING:
    from egressproxy.ca import GatewayCA

# (namespace, name) of a gateway -> its minted CA (`egressproxy run`); None where nothing may be written (validate)
GatewayCASource = Callable[[str, str], "GatewayCA"]


class Compilation:
    def __init__(
        self,
        resources: Sequence[Resource],
        gateway_name: str | None,
        mounted: MountedSecrets,
        generation: int,
        files: Iterable[str] | None,
        gateway_cas: GatewayCASource | None = None,
    ) -> None:
        self.resources = list(resources)
        self.gateway_name = gateway_name
        self.mounted = mounted
        self.generation = generation
        self.gateway_cas = gateway_cas
        self.files = tuple(files) if files is not None else tuple(dict.fromkeys(r.file for r in self.resources))
        self.objects: dict[str, dict[tuple[str, str], Resource]] = {}
        for r in self.resources:
            self.objects.setdefault(r.kind, {})[(r.namespace, r.name)] = r
        self.problems: list[Problem] = list(mounted.problems)
        self.status = StatusBook()
        self.listener_status: dict[str, StatusBook] = {}
        self.secrets: dict[ObjectRef, SecretData] = {}
        self.secret_values: set[str] = set()
        self.backends: dict[ObjectRef, Backend] = {}
        self.direct_responses: dict[ObjectRef, DirectResponse] = {}
        self.served: Resource | None = None
        self.shells: list[ListenerShell] = []
        self.attached: dict[tuple[str, str, Any], list[AttachedPolicy]] = {}
        self.policy_targets: dict[ObjectRef, list[tuple[str, Any]]] = {}  # policy -> attachment points
        self.policy_dangling: set[ObjectRef] = set()
        self.denies: dict[ObjectRef, DenyAction] = {}
        self.routes: dict[ObjectRef, Route] = {}
        self.unsupported: dict[ObjectRef, tuple[str, ...]] = {}  # object -> fields set but not enforced

    def of_kind(self, kind: str) -> list[Resource]:
        return sorted(self.objects.get(kind, {}).values(), key=lambda r: (r.namespace, r.name))

    def find(self, kind: str, namespace: str, name: str) -> Resource | None:
        return self.objects.get(kind, {}).get((namespace, name))

    def problem(self, res: Resource, path: str, message: str) -> None:
        self.problems.append(Problem(res.file, res.line_of(path), str(res.ref), path, message))
