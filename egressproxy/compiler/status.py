"""Status conditions per object, kept the way a Kubernetes controller writes them (Accepted, ResolvedRefs,
Programmed)."""

from __future__ import annotations

from egressproxy.config.problems import ObjectRef
from egressproxy.snapshot import Condition


class StatusBook:
    """Conditions per object; once a condition is False it stays False (the first failure explains it)."""

    def __init__(self) -> None:
        self.conditions: dict[ObjectRef, dict[str, Condition]] = {}

    def set(self, ref: ObjectRef, type_: str, ok: bool, reason: str, message: str = "") -> None:
        conds = self.conditions.setdefault(ref, {})
        current = conds.get(type_)
        if current is not None and not current.ok and ok:
            return
        if current is not None and not current.ok and not ok:
            return
        conds[type_] = Condition(type_, "True" if ok else "False", reason, message)

    def has(self, ref: ObjectRef, type_: str) -> bool:
        return type_ in self.conditions.get(ref, {})

    def frozen(self) -> dict[ObjectRef, tuple[Condition, ...]]:
        order = {"Accepted": 0, "ResolvedRefs": 1, "Programmed": 2}
        return {
            ref: tuple(sorted(conds.values(), key=lambda c: (order.get(c.type, 9), c.type)))
            for ref, conds in sorted(self.conditions.items())
        }
