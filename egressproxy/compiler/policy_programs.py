"""RegionAllowListPolicy, TrafficPolicy `rbac`, HTTPListenerPolicy `celValidation` and `buffer`, compiled.

Every CEL expression is compiled here, once per snapshot; one that does not compile is a problem pinned to its
file, line and field path (`spec.rbac.policy.matchExpressions[1]`). A GeoIP database is opened here too (memory
mapped, read-only); one that cannot be opened or is no MaxMind DB is a problem at `spec.geoIP.databasePath`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import maxminddb

from egressproxy.cel_programs import CelError, CelProgram, compile_program
from egressproxy.compiler.compilation import Compilation
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.regions import RegionPolicy
from egressproxy.request_policies import BodyLimit, CelRule, CelValidation, RbacPolicy, RequestPolicyTable

__all__ = ["PolicyPrograms", "compile_policy_programs"]


@dataclass(frozen=True, slots=True)
class PolicyPrograms:
    regions: dict[ObjectRef, RegionPolicy] = field(default_factory=dict)
    requests: RequestPolicyTable = field(default_factory=RequestPolicyTable)


def compile_policy_programs(comp: Compilation) -> PolicyPrograms:
    regions = {res.ref: _region(comp, res) for res in comp.of_kind("RegionAllowListPolicy")}
    rbac: dict[ObjectRef, RbacPolicy] = {}
    for res in comp.of_kind("TrafficPolicy"):
        compiled = _rbac(comp, res)
        if compiled is not None:
            rbac[res.ref] = compiled
    validation: dict[ObjectRef, CelValidation] = {}
    limits: dict[ObjectRef, BodyLimit] = {}
    for res in comp.of_kind("HTTPListenerPolicy"):
        rules = _validation(comp, res)
        if rules is not None:
            validation[res.ref] = rules
        max_bytes = (res.spec.get("buffer") or {}).get("maxRequestBytes")
        if max_bytes is not None:
            limits[res.ref] = BodyLimit(res.ref, int(max_bytes))
    table = RequestPolicyTable(MappingProxyType(rbac), MappingProxyType(validation), MappingProxyType(limits))
    return PolicyPrograms(regions, table)


def _report(res: Resource) -> bool:
    return res.spec.get("enforcementMode") == "Report"


def _region(comp: Compilation, res: Resource) -> RegionPolicy:
    spec = res.spec
    path = (spec.get("geoIP") or {}).get("databasePath")
    reader: Any = None
    if path:
        if not os.path.isabs(path) and res.file:
            path = os.path.join(os.path.dirname(res.file), path)  # relative to the YAML file that names it
        try:
            reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else f"not a MaxMind DB ({e})"
            message = f"cannot open the GeoIP database {path!r}: {why}"
            comp.problem(res, "spec.geoIP.databasePath", message)
            comp.status.set(res.ref, "ResolvedRefs", False, "InvalidGeoIPDatabase", f"spec.geoIP.databasePath: {message}")
    allowed = tuple(str(r) for r in spec.get("allowedRegions") or ())
    sets = frozenset(k for k in ("allowedRegions", "unknownRegion", "geoIP", "enforcementMode") if k in _raw_spec(res))
    return RegionPolicy(res.ref, allowed, spec.get("unknownRegion") == "Allow", _report(res), path, reader, sets)


def _raw_spec(res: Resource) -> Any:
    """The spec as written (defaults are no setting: a merge must not take a default over a gateway's value)."""
    raw = res.raw.get("spec") if hasattr(res.raw, "get") else None
    return raw if isinstance(raw, dict) or hasattr(raw, "keys") else {}


def _program(comp: Compilation, res: Resource, source: str, path: str) -> CelProgram | None:
    try:
        return compile_program(source, path)
    except CelError as e:
        comp.problem(res, path, str(e))
        comp.status.set(res.ref, "Accepted", False, "InvalidCEL", f"{path}: {e}")
        return None


def _rbac(comp: Compilation, res: Resource) -> RbacPolicy | None:
    rbac = res.spec.get("rbac")
    if not rbac:
        return None
    sources = (rbac.get("policy") or {}).get("matchExpressions") or []
    programs = [_program(comp, res, s, f"spec.rbac.policy.matchExpressions[{i}]") for i, s in enumerate(sources)]
    if any(p is None for p in programs):
        return None
    return RbacPolicy(res.ref, tuple(p for p in programs if p is not None), rbac.get("action") == "Deny", _report(res))


def _validation(comp: Compilation, res: Resource) -> CelValidation | None:
    rules = (res.spec.get("celValidation") or {}).get("rules")
    if not rules:
        return None
    compiled: list[CelRule] = []
    for i, rule in enumerate(rules):
        program = _program(comp, res, rule["expression"], f"spec.celValidation.rules[{i}].expression")
        if program is None:
            return None
        compiled.append(CelRule(program, rule.get("action") == "Allow"))
    return CelValidation(res.ref, tuple(compiled), _report(res))
