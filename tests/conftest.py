"""Shared fixtures: a test PKI, TLS origins on loopback, and the real gateway process."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from egressproxy.ca import create_ca, secret_manifest
from tests.support.gateway import GatewayProcess
from tests.support.origins import HttpOrigin
from tests.support.pki import TestCA


@pytest.fixture(scope="session")
def origin_ca() -> TestCA:
    """The root CA that signs every test origin's certificate (the gateway trusts it via a Secret)."""
    return TestCA("egressproxy test origins")


@pytest.fixture(scope="session")
def gateway_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The gateway's interception CA: (ca.crt path for clients, the Secret manifest named `egress-ca`)."""
    cert, key = create_ca("egress-ca")
    d = tmp_path_factory.mktemp("gateway-ca")
    (d / "ca.crt").write_bytes(cert)
    return d / "ca.crt", secret_manifest("egress-ca", cert, key)


@pytest.fixture
def trust_secret(origin_ca: TestCA) -> str:
    """A Secret `origin-ca` holding the origin CA, for upstreamTLS.additionalTrustBundleSecretRef."""
    pem = textwrap.indent(origin_ca.cert_pem.decode(), "    ")
    return f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: origin-ca\nstringData:\n  ca.crt: |\n{pem}"


@pytest.fixture
def tls_origin(origin_ca: TestCA, tmp_path: Path) -> Callable[..., HttpOrigin]:
    """Start an HTTPS origin for the given names on 127.0.0.1 (a free port unless told)."""
    started: list[HttpOrigin] = []

    def start(*names: str, host: str = "127.0.0.1", port: int = 0, name: str = "origin", expired: bool = False) -> HttpOrigin:
        cert, key = origin_ca.issue(*names, expired=expired).write(tmp_path / f"origin-{len(started)}", "leaf")
        origin = HttpOrigin(host, port, tls=(cert, key), name=name).__enter__()
        started.append(origin)
        return origin

    yield start  # type: ignore[misc]
    for origin in started:
        origin.__exit__()


@pytest.fixture
def plain_origin() -> Iterator[Callable[..., HttpOrigin]]:
    started: list[HttpOrigin] = []

    def start(host: str = "127.0.0.1", port: int = 0, name: str = "origin") -> HttpOrigin:
        origin = HttpOrigin(host, port, name=name).__enter__()
        started.append(origin)
        return origin

    yield start
    for origin in started:
        origin.__exit__()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Write YAML documents into a config folder and start `egressproxy run` on it (stopped after the test)."""
    running: list[GatewayProcess] = []

    def start(*documents: str, wait: bool = True, **kwargs: object) -> GatewayProcess:
        config = tmp_path / f"config-{len(running)}"
        config.mkdir()
        for i, doc in enumerate(documents):
            (config / f"{i:02d}.yaml").write_text(textwrap.dedent(doc))
        proc = GatewayProcess(config, tmp_path / f"data-{len(running)}", **kwargs)  # type: ignore[arg-type]
        running.append(proc)
        return proc.start(wait=wait)

    yield start
    for proc in running:
        proc.stop()
