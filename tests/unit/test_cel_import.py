"""egressproxy/cel_programs.py imports `cel` without its REPL (typer, prompt_toolkit, rich: ~22 MiB of RSS)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from egressproxy.cel_programs import compile_program, RequestVariables
program = compile_program('request.method == "GET"', "spec.rbac")
print(sorted(m for m in ("prompt_toolkit", "typer", "rich") if m in sys.modules))
"""


def test_compiling_cel_leaves_the_command_line_libraries_unloaded() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
