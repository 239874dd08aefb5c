"""Microseconds per CEL evaluation: cel-python (pure Python) against common-expression-language (Rust bindings).

How the gateway's CEL library was chosen (pyproject.toml says which and why). Each library compiles the same
expressions once, then evaluates them many times against the variables one request gives (headers, path,
method, host, source address and identity, a small JSON body), building the activation anew each time as the
data plane does. Run: `.venv/bin/python loadtest/cel_bench.py [--rounds N]`. One core, a few seconds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

EXPRESSIONS = (
    'request.headers["x-team"] == "payments"',
    'request.path.startsWith("/v1/") && request.method == "POST"',
    'source.identity.namespace == "prod" && source.identity.serviceAccount in ["agent", "batch"]',
    'request.body.model == "gpt-4o-mini" && size(request.body.messages) < 10',
)


def _variables() -> dict[str, Any]:
    return {
        "request": {
            "headers": {"x-team": "payments", "content-type": "application/json", "user-agent": "bench"},
            "path": "/v1/chat/completions",
            "method": "POST",
            "host": "api.openai.com",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        },
        "source": {"address": "10.0.0.7", "identity": {"namespace": "prod", "serviceAccount": "agent"}},
    }


def _rust() -> Callable[[str], Callable[[], Any]]:
    import cel

    def prepare(expression: str) -> Callable[[], Any]:
        program = cel.compile(expression)
        return lambda: program.execute(_variables())

    return prepare


def _pure() -> Callable[[str], Callable[[], Any]]:
    import celpy

    env = celpy.Environment()

    def prepare(expression: str) -> Callable[[], Any]:
        program = env.program(env.compile(expression))
        return lambda: program.evaluate({k: celpy.json_to_cel(v) for k, v in _variables().items()})

    return prepare


def _measure(run: Callable[[], Any], rounds: int) -> float:
    assert run() is not None
    start = time.perf_counter()
    for _ in range(rounds):
        run()
    return (time.perf_counter() - start) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    for name, factory in (("common-expression-language (Rust)", _rust), ("cel-python (pure Python)", _pure)):
        prepare = factory()
        for expression in EXPRESSIONS:
            micros = _measure(prepare(expression), args.rounds)
            print(f"{name:36} {micros:9.1f} us  {expression}")


if __name__ == "__main__":
    main()
