"""reloader: the Unsupported warnings `run` logs at start and on every accepted reload (honest status)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from egressproxy.runtime.reloader import ConfigSource, Reloader
from egressproxy.runtime.state import GatewayState

GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: gw}
spec:
  listeners:
  - {name: http, protocol: HTTP}
"""

SLOW = """\
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: slow}
spec:
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: gw}]
  csrf: {percentageEnabled: 100}
"""

LOGGING = """\
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: LoggingPolicy
metadata: {name: audit}
spec: {captureRequest: true, sinkRef: audit-sink}
"""


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "egressproxy"]


def reloader_for(tmp_path: Path, text: str, worker: int = 0) -> tuple[Reloader, Path]:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    state = GatewayState(tmp_path / "data", worker=worker)
    return Reloader(ConfigSource((str(config),)), state), config


def test_one_warning_per_unsupported_object_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reloader, _ = reloader_for(tmp_path, GATEWAY + SLOW + LOGGING)
    with caplog.at_level(logging.WARNING, logger="egressproxy"):
        assert reloader.load_initial().ok
    assert warnings_of(caplog) == [
        "LoggingPolicy/default/audit is not enforced in full (Programmed=False, Unsupported): "
        "spec.sinkRef is validated but not enforced by this build",
        "TrafficPolicy/default/slow is not enforced in full (Programmed=False, Unsupported): "
        "spec.csrf is validated but not enforced by this build",
    ]


def test_the_warnings_repeat_on_every_reload(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reloader, config = reloader_for(tmp_path, GATEWAY + SLOW)
    assert reloader.load_initial().ok
    caplog.clear()
    config.write_text(GATEWAY + SLOW + LOGGING)
    with caplog.at_level(logging.WARNING, logger="egressproxy"):
        assert asyncio.run(reloader.reload("test")).ok
    assert [w.split(" is not enforced")[0] for w in warnings_of(caplog)] == [
        "LoggingPolicy/default/audit",
        "TrafficPolicy/default/slow",
    ]


def test_a_fully_enforced_configuration_warns_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reloader, _ = reloader_for(tmp_path, GATEWAY)
    with caplog.at_level(logging.WARNING, logger="egressproxy"):
        assert reloader.load_initial().ok
    assert warnings_of(caplog) == []


def test_a_rejected_reload_warns_nothing_more(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reloader, config = reloader_for(tmp_path, GATEWAY + SLOW)
    assert reloader.load_initial().ok
    caplog.clear()
    config.write_text(GATEWAY + SLOW.replace("csrf: {percentageEnabled: 100}", "csrf: {percentageEnabled: 101}"))
    with caplog.at_level(logging.WARNING, logger="egressproxy"):
        assert not asyncio.run(reloader.reload("test")).ok
    assert warnings_of(caplog) == []


def test_only_worker_zero_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Under --workers N every process loads the config; the log says each thing once."""
    reloader, _ = reloader_for(tmp_path, GATEWAY + SLOW, worker=1)
    with caplog.at_level(logging.WARNING, logger="egressproxy"):
        assert reloader.load_initial().ok
    assert warnings_of(caplog) == []


def test_a_reload_that_first_needs_a_minted_ca_mints_it_off_the_loop(tmp_path: Path) -> None:
    """HTTP -> HTTP+Terminate without caCertRef: the reload mints the gateway's CA, in the loader's thread."""
    import threading

    from egressproxy.ca import GatewayCA, GatewayCAStore

    minted_on: list[threading.Thread] = []

    class RecordingStore(GatewayCAStore):
        def __call__(self, namespace: str, name: str) -> GatewayCA:
            minted_on.append(threading.current_thread())
            return super().__call__(namespace, name)

    config = tmp_path / "config.yaml"
    config.write_text(GATEWAY)
    data = tmp_path / "data"
    reloader = Reloader(ConfigSource((str(config),), gateway_cas=RecordingStore(data)), GatewayState(data))
    assert reloader.load_initial().ok
    assert not (data / "ca").exists()
    config.write_text(GATEWAY.replace("protocol: HTTP}", "protocol: HTTP, tls: {mode: Terminate}}"))

    async def reload() -> tuple[bool, threading.Thread]:
        return (await reloader.reload("test")).ok, threading.current_thread()

    ok, loop_thread = asyncio.run(reload())
    assert ok
    assert len(minted_on) == 1 and minted_on[0] is not loop_thread
    snapshot = reloader.state.snapshot
    assert snapshot is not None
    ca = snapshot.gateway.listeners[0].ca
    assert ca is not None and ca.cert_pem == (data / "ca" / "default" / "gw" / "ca.crt").read_bytes()
