"""Gateway state for addon-level unit tests: a compiled snapshot from YAML, and counter readings."""

from __future__ import annotations

import textwrap
from pathlib import Path

from egressproxy.ca import create_ca, secret_manifest
from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_text
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Snapshot


def compile_snapshot(config: str, *, ca: str | None = None) -> Snapshot:
    """Compile YAML documents (plus a CA Secret named `ca` when asked) into a snapshot, or fail the test."""
    text = textwrap.dedent(config)
    if ca is not None:
        text += "---\n" + secret_manifest(ca, *create_ca(ca))
    loaded = load_text(text, "addon-test.yaml")
    assert loaded.ok, loaded.problems
    compiled = compile_config(loaded.resources)
    assert compiled.ok, compiled.problems
    assert compiled.snapshot is not None
    return compiled.snapshot


def state_for(snapshot: Snapshot | None, data_dir: Path) -> GatewayState:
    state = GatewayState(data_dir)
    if snapshot is not None:
        state.swap(snapshot)
    return state


def counter(state: GatewayState, name: str, **labels: str) -> float:
    """The current value of a counter sample (`egress_denials_total`, ...), 0 when it was never incremented."""
    return state.metrics.registry.get_sample_value(name, labels) or 0.0
