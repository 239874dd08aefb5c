"""The ext_authz client against a real gRPC server on loopback: the address comes from the dialer (here its
hostAliases: the Service name resolves nowhere else), a refusal or a silent service is a failure answer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from egressproxy.config.problems import ObjectRef
from egressproxy.ext_auth import ExtAuthAnswer, ExtAuthService, HeaderEdit
from egressproxy.ext_auth_client import ExtAuthClient
from egressproxy.ext_auth_protocol import CheckInput, build_check_request
from egressproxy.flowrecord import UNKNOWN_IDENTITY
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Snapshot
from tests.support.ext_authz import ExtAuthzServer
from tests.support.gateway import free_port
from tests.unit.test_compiler import compiled

NAME = "authz.auth.svc.cluster.local"


def snapshot(family: str = "V4Preferred") -> Snapshot:
    return compiled(f"""
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  listeners: [{{name: http, protocol: HTTP, port: 80}}]
  dns: {{lookupFamily: {family}}}
  upstreamTLS:
    hostAliases: [{{ip: 127.0.0.1, hostnames: [{NAME}]}}]
""")


@pytest.fixture(scope="module")
def server() -> Iterator[ExtAuthzServer]:
    with ExtAuthzServer(slow_seconds=2.0) as running:
        yield running


def check(path: str, port: int, family: str = "V4Preferred", timeout: float = 1.0) -> ExtAuthAnswer:
    data = CheckInput("id", "GET", path, "api.example.test", "https", "HTTP/1.1", (), "127.0.0.1", 1, "api.example.test",
                      443, UNKNOWN_IDENTITY)
    service = ExtAuthService(ObjectRef("GatewayExtension", "default", "authz"), NAME, port, f"{NAME}:{port}", timeout)

    async def run() -> ExtAuthAnswer:
        client = ExtAuthClient(GatewayState(data_dir=Path("/tmp")).dialer)
        try:
            return await client.check(snapshot(family), service, build_check_request(data, {}))
        finally:
            await client.close()

    return asyncio.run(run())


def test_the_call_goes_to_the_address_the_dialer_checked(server: ExtAuthzServer) -> None:
    answer = check("/ok", server.port)
    assert answer == ExtAuthAnswer(True, (HeaderEdit("x-authz-user", "alice"),), ("x-remove-me",))
    assert server.requests[-1].attributes.request.http.path == "/ok"


def test_a_refusal_of_the_dialer_is_a_failure_and_nothing_is_called(server: ExtAuthzServer) -> None:
    before = len(server.requests)
    answer = check("/ok", server.port, family="V6Only")
    assert answer.failure == f"the dialer refused {NAME}:{server.port} (upstream-unreachable)"
    assert len(server.requests) == before


def test_a_service_that_is_down_is_a_failure() -> None:
    assert check("/ok", free_port()).failure == "the call failed with gRPC status UNAVAILABLE"


def test_a_slow_service_is_a_timeout(server: ExtAuthzServer) -> None:
    assert check("/slow", server.port, timeout=0.3).failure == "no answer within the timeout (0.3s)"
