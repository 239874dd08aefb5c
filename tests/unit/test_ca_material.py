"""ca_material: a Terminate listener without caCertRef serves its gateway's minted CA at run, and at validate
compiles with no CA yet (nothing written, the status says it is minted at run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from egressproxy.ca import GatewayCAStore, gateway_ca_dir
from egressproxy.compiler import CompileResult, compile_config
from egressproxy.compiler.ca_material import MINTED, MINTED_AT_RUN
from egressproxy.compiler.compilation import GatewayCASource
from egressproxy.config.loader import load_text
from egressproxy.snapshot import Condition

FILE = "cfg.yaml"

GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: gw, namespace: platform}
spec:
  defaultPolicy: allow-all
  listeners:
  - name: https
    protocol: HTTPS
    tls: {mode: Terminate}
  - name: http
    protocol: HTTP
    tls: {mode: Terminate}
  - name: tls
    protocol: TLS
    tls: {mode: Terminate}
  - name: pass
    protocol: TLS
    tls: {mode: Passthrough}
"""


def compile_gateway(gateway_cas: GatewayCASource | None = None) -> CompileResult:
    loaded = load_text(GATEWAY, FILE)
    assert [str(p) for p in loaded.problems] == []
    return compile_config(loaded.resources, gateway_cas=gateway_cas)


def test_at_run_every_terminate_listener_serves_the_gateways_minted_ca(tmp_path: Path) -> None:
    result = compile_gateway(GatewayCAStore(tmp_path))
    assert [str(p) for p in result.problems] == []
    assert result.snapshot is not None
    cas = {listener.name: listener.ca for listener in result.snapshot.gateway.listeners}
    minted = (gateway_ca_dir(tmp_path, "platform", "gw") / "ca.crt").read_bytes()
    assert cas["pass"] is None
    for name in ("https", "http", "tls"):
        ca = cas[name]
        assert ca is not None and ca.cert_pem == minted and ca.secret is None, name
        assert ca.to_dump() == {
            "secret": None,
            "certPem": "present",
            "keyPem": "<redacted>",
            "minted": str(gateway_ca_dir(tmp_path, "platform", "gw") / "ca.crt"),
        }
    assert result.listener_statuses["https"][1] == Condition("ResolvedRefs", "True", "ResolvedRefs", MINTED)


def test_a_second_compile_reuses_the_ca_of_the_first(tmp_path: Path) -> None:
    first = compile_gateway(GatewayCAStore(tmp_path)).snapshot
    again = compile_gateway(GatewayCAStore(tmp_path)).snapshot  # the next start
    assert first is not None and again is not None
    assert first.gateway.listeners[0].ca == again.gateway.listeners[0].ca


def test_validate_writes_nothing_and_says_the_ca_is_minted_at_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = compile_gateway()
    assert [str(p) for p in result.problems] == []
    assert result.snapshot is not None
    assert [listener.ca for listener in result.snapshot.gateway.listeners] == [None, None, None, None]
    assert result.listener_statuses["http"][1] == Condition("ResolvedRefs", "True", "ResolvedRefs", MINTED_AT_RUN)
    assert list(tmp_path.iterdir()) == []


def test_an_unusable_minted_ca_is_a_problem_at_the_listener(tmp_path: Path) -> None:
    folder = gateway_ca_dir(tmp_path, "platform", "gw")
    GatewayCAStore(tmp_path)("platform", "gw")
    (folder / "ca.key").write_bytes(b"not a key")
    result = compile_gateway(GatewayCAStore(tmp_path))
    message = f"the gateway's CA at {folder}: ca.key is not an unencrypted PEM private key"
    assert [str(p) for p in result.problems] == [
        f"{FILE}:{line}: EgressGateway/platform/gw: spec.listeners[{i}].tls: {message}"
        for i, line in enumerate((9, 12, 15))
    ]
    assert result.listener_statuses["https"][1].status == "False"


def test_a_ca_that_cannot_be_read_is_a_problem_never_replaced(tmp_path: Path) -> None:
    folder = gateway_ca_dir(tmp_path, "platform", "gw")
    GatewayCAStore(tmp_path)("platform", "gw")
    (folder / "ca.key").unlink()
    result = compile_gateway(GatewayCAStore(tmp_path))
    problems = [str(p) for p in result.problems]
    assert problems[0].startswith(
        f"{FILE}:9: EgressGateway/platform/gw: spec.listeners[0].tls: cannot read or mint the gateway's CA: "
        f"{folder / 'ca.key'}: No such file or directory; the CA is not replaced silently"
    )
    assert not (folder / "ca.key").exists()
