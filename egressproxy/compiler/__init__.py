"""Validated resources -> one immutable, fully resolved `Snapshot` (plus problems and status conditions).

The compiler resolves every reference once, so the data plane never does: route parentRefs to the served
EgressGateway and its listeners, backendRefs to Backends, secretRefs to decoded Secrets, policy targetRefs /
targetRef / parentRefs and route filter ExtensionRefs to their attachment scope. Every dangling reference is a
`Problem` at its exact file:line and field path (`spec.rules[0].backendRefs[0].name: Backend "default/nope" not
found`): a typo must never silently disable a route or a policy. Status conditions are computed the way a
Kubernetes controller would write them (Accepted, ResolvedRefs, Programmed).

A `CompileResult` carries a snapshot whenever a gateway could be selected, so `explain` and `validate` can show
what would be served; **serve it only when `result.ok`** (no problems). The runtime's reloader does exactly that.

Secrets come from `v1 Secret` objects and from a mounted secrets folder, `DIR/<name>/<key>` (one file per key,
namespace-agnostic: a mounted Secret answers a reference from any namespace and wins over a `v1 Secret` object of
the same name, since the mounted copy is the one Kubernetes rotates). Reading that folder is `read_secrets_dir`,
a blocking function the runtime calls off the event loop and passes in as `mounted=`.

One pass module per concern, each reading and extending one `Compilation`; `pipeline` runs them in order.
"""

from egressproxy.compiler.gateway_selection import select_gateway
from egressproxy.compiler.hostname_forms import canonical_wildcard
from egressproxy.compiler.kinds import POLICY_KINDS, ROUTE_KINDS
from egressproxy.compiler.mounted_secrets import MountedSecrets, read_secrets_dir
from egressproxy.compiler.pipeline import CompileResult, compile_config
from egressproxy.compiler.route_tables import build_host_table, build_http_table, build_l4_table

__all__ = [
    "CompileResult",
    "MountedSecrets",
    "compile_config",
    "read_secrets_dir",
    "select_gateway",
    "ROUTE_KINDS",
    "POLICY_KINDS",
    "build_http_table",
    "build_host_table",
    "build_l4_table",
    "canonical_wildcard",
]
