"""DirectResponse objects, which a route filter's ExtensionRef answers a request with."""

from __future__ import annotations

from egressproxy.compiler.compilation import Compilation
from egressproxy.snapshot import DirectResponse


def compile_direct_responses(comp: Compilation) -> None:
    for res in comp.of_kind("DirectResponse"):
        status = res.spec.get("status", res.spec.get("statusCode", 200))
        comp.direct_responses[res.ref] = DirectResponse(res.ref, int(status), res.spec.get("body", ""))
        comp.status.set(res.ref, "Accepted", True, "Accepted")
