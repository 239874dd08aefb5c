"""CEL expressions over a request (agentgateway's variables), compiled once per snapshot.

The library is `common-expression-language` (Rust bindings): 50-100 us per evaluation against cel-python's
260-700 us on the same expressions and variables (`loadtest/cel_bench.py`, docs/policies.md). A program is
compiled by the compiler (`compile_program`), never on the hot path; evaluation is `CelProgram.evaluate`.

Variables (docs/policies.md):

    request.headers   map of lower-case header name -> value (repeated headers joined with ",")
    request.path      the path as sent, query included
    request.method    upper-case
    request.host      the canonical host the request was decided on
    request.body      the JSON body, parsed (null when the body is empty or not JSON); read only when an
                      expression of the request's policies mentions `body`: only then is the body buffered
    source.address    the client's IP address
    source.identity   {namespace, serviceAccount}: the workload identity (DESIGN.md 5)

An evaluation error (a missing header, a type mismatch) and a result that is not a bool are `CelError`: callers
deny (fail closed). Error texts never carry a value from the request: only the kind of error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CelError", "CelProgram", "RequestVariables", "compile_program", "json_body", "mentions_body"]

_BODY = re.compile(r"\bbody\b")


class CelError(Exception):
    """An expression that did not compile, or did not evaluate to a bool."""


@dataclass(frozen=True, slots=True)
class CelProgram:
    """One compiled expression and where it was written (`spec.rbac.policy.matchExpressions[0]`)."""

    source: str
    path: str
    needs_body: bool
    program: Any = field(compare=False, repr=False)

    def evaluate(self, variables: Mapping[str, Any]) -> bool:
        try:
            result = self.program.execute(dict(variables))
        except Exception as e:  # the library raises KeyError, TypeError, ValueError, RuntimeError...
            raise CelError(f"{self.path} could not be evaluated ({type(e).__name__})") from None
        if not isinstance(result, bool):
            raise CelError(f"{self.path} evaluated to a {type(result).__name__}, not a bool")
        return result


def mentions_body(source: str) -> bool:
    """Whether an expression may read `request.body` (any `body` identifier: a safe over-approximation)."""
    return _BODY.search(source) is not None


def compile_program(source: str, path: str) -> CelProgram:
    """Compile `source`; `CelError` with the parser's message when it does not compile.

    `cel` is imported here, not at the top: it costs ~0.25 s, which every start of a gateway without CEL
    policies (and every `validate`/`explain`) would pay otherwise.
    """
    import cel

    try:
        program = cel.compile(source)
    except Exception as e:
        message = str(e).replace("\n", " ").strip()
        raise CelError(f"CEL expression does not compile: {message}") from None
    return CelProgram(source, path, mentions_body(source), program)


@dataclass(frozen=True, slots=True)
class RequestVariables:
    """What one request gives the expressions; `to_cel()` builds the activation."""

    headers: Mapping[str, str]
    path: str
    method: str
    host: str
    source_address: str = ""
    namespace: str = "unknown"
    service_account: str = "unknown"
    body: Any = None

    def to_cel(self) -> dict[str, Any]:
        return {
            "request": {
                "headers": dict(self.headers),
                "path": self.path,
                "method": self.method,
                "host": self.host,
                "body": self.body,
            },
            "source": {
                "address": self.source_address,
                "identity": {"namespace": self.namespace, "serviceAccount": self.service_account},
            },
        }


def json_body(content: bytes | None) -> Any:
    """`request.body`: the body parsed as JSON, or None (empty, not JSON, not UTF-8)."""
    if not content:
        return None
    try:
        return json.loads(content)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
