"""Reading the root Dockerfile's instructions (continuation lines joined), for the tests that check the image
without a docker engine."""

from __future__ import annotations

import json
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, comments dropped, `\\` continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        out.append((keyword.upper(), rest.strip()))
        pending = ""
    return out


def last(keyword: str, path: Path = DOCKERFILE) -> str:
    found = [rest for kw, rest in instructions(path) if kw == keyword]
    assert found, f"the Dockerfile has no {keyword}"
    return found[-1]


def exec_form(text: str) -> list[str]:
    """An exec-form (JSON array) argument list; shell form is refused (signals would go to /bin/sh)."""
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


def healthcheck_command() -> list[str]:
    rest = last("HEALTHCHECK")
    return exec_form(rest[rest.index("CMD") + 3 :].strip())
