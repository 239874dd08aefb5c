"""The policy pass: attach every policy to its targets, check its references, and after the routes (whose
ExtensionRef filters also attach policies) accept the policies something attaches."""

from __future__ import annotations

from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.deny_policies import record_deny
from egressproxy.compiler.kinds import POLICY_KINDS
from egressproxy.compiler.policy_refs import check_policy_refs
from egressproxy.compiler.policy_targets import attach, policy_target_refs, resolve_target
from egressproxy.config.resource import Resource


def compile_policies(comp: Compilation) -> None:
    for kind in POLICY_KINDS:
        for res in comp.of_kind(kind):
            _compile_policy(comp, res)


def _compile_policy(comp: Compilation, res: Resource) -> None:
    comp.policy_targets.setdefault(res.ref, [])
    for path, tref in policy_target_refs(res):
        point = resolve_target(comp, res, path, tref)
        if point is not None:
            attach(comp, res, point)
    check_policy_refs(comp, res)
    if res.kind == "EgressDenyPolicy":
        record_deny(comp, res)


def report_extension_only_policies(comp: Compilation) -> None:
    """Policies no targetRef and no route filter attaches: Accepted=False (DESIGN: RateLimitPolicy)."""
    for kind in POLICY_KINDS:
        for res in comp.of_kind(kind):
            if not comp.policy_targets.get(res.ref) and res.ref not in comp.policy_dangling:
                comp.status.set(
                    res.ref,
                    "Accepted",
                    False,
                    "NoTarget",
                    "no targetRef, parentRef or route ExtensionRef filter attaches this policy",
                )
            elif res.ref not in comp.policy_dangling:
                comp.status.set(res.ref, "Accepted", True, "Accepted")
