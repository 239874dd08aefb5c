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

The activation holds only the variables the request's expressions read (`CelProgram.reads`, found when the
expression is compiled): the library converts every value it is handed, whether the expression reads it or not,
and with every variable that was ~105 us for `request.method == "DELETE"` against ~18 us with `request.method`
alone (the headers map is most of it). The reading is conservative: an expression that names `request` or
`source` other than as `request.<field>` / `source.<field>` (a macro over the map, an index, a string that
contains the word) gets every variable, as before.
"""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ALL_VARIABLES",
    "CelError",
    "CelProgram",
    "RequestVariables",
    "compile_program",
    "json_body",
    "mentions_body",
    "variables_read",
]

_BODY = re.compile(r"\bbody\b")
_FIELDS = {"request": ("headers", "path", "method", "host", "body"), "source": ("address", "identity")}
ALL_VARIABLES = frozenset(f"{root}.{name}" for root, names in _FIELDS.items() for name in names)
_ROOT = re.compile(r"\b(request|source)\b")
_FIELD_AFTER = re.compile(r"\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")


class CelError(Exception):
    """An expression that did not compile, or did not evaluate to a bool."""


@dataclass(frozen=True, slots=True)
class CelProgram:
    """One compiled expression and where it was written (`spec.rbac.policy.matchExpressions[0]`)."""

    source: str
    path: str
    needs_body: bool
    program: Any = field(compare=False, repr=False)
    reads: frozenset[str] = ALL_VARIABLES  # the variables (`request.method`, ...) the expression may read

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


def variables_read(source: str) -> frozenset[str]:
    """The variables `source` may read; every variable unless each `request`/`source` is followed by a field."""
    reads = set()
    for root in _ROOT.finditer(source):
        name = _FIELD_AFTER.match(source, root.end())
        if name is None or name.group(1) not in _FIELDS[root.group(1)]:
            return ALL_VARIABLES
        reads.add(f"{root.group(1)}.{name.group(1)}")
    return frozenset(reads)


def _import_cel() -> Any:
    """The `cel` package without its command-line REPL: its `__init__` imports `cel.cli` (typer, prompt_toolkit,
    rich, pygments: ~22 MiB of RSS in a gateway that never opens a terminal). An empty module stands in for
    `cel.cli`, which nothing but `python -m cel` uses; compile and evaluate live in `cel.cel`."""
    sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))
    import cel

    return cel


def compile_program(source: str, path: str) -> CelProgram:
    """Compile `source`; `CelError` with the parser's message when it does not compile.

    `cel` is imported here, not at the top: it costs ~0.25 s, which every start of a gateway without CEL
    policies (and every `validate`/`explain`) would pay otherwise.
    """
    cel = _import_cel()

    try:
        program = cel.compile(source)
    except Exception as e:
        message = str(e).replace("\n", " ").strip()
        raise CelError(f"CEL expression does not compile: {message}") from None
    return CelProgram(source, path, mentions_body(source), program, variables_read(source))


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

    def to_cel(self, reads: frozenset[str] = ALL_VARIABLES) -> dict[str, Any]:
        """The activation, with only the variables in `reads` (every one by default)."""
        if reads == ALL_VARIABLES:
            return {
                "request": {
                    "headers": dict(self.headers),
                    "path": self.path,
                    "method": self.method,
                    "host": self.host,
                    "body": self.body,
                },
                "source": {"address": self.source_address, "identity": self._identity()},
            }
        activation: dict[str, Any] = {}
        for variable in reads:
            root, name = variable.split(".", 1)
            activation.setdefault(root, {})[name] = self._value(variable)
        return activation

    def _identity(self) -> dict[str, str]:
        return {"namespace": self.namespace, "serviceAccount": self.service_account}

    def _value(self, variable: str) -> Any:
        if variable == "request.headers":
            return dict(self.headers)
        if variable == "source.address":
            return self.source_address
        if variable == "source.identity":
            return self._identity()
        return getattr(self, variable.split(".", 1)[1])


def json_body(content: bytes | None) -> Any:
    """`request.body`: the body parsed as JSON, or None (empty, not JSON, not UTF-8)."""
    if not content:
        return None
    try:
        return json.loads(content)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
