"""Server-speaks-first protocols through the transparent sidecar (a banner before any client byte).

With lazy upstream connections nothing is dialled before a decision, and mitmproxy would take that decision
only on the client's first bytes; a client waiting for an SMTP/MySQL-style banner would then wait forever. When
only raw-TCP listeners can take the destination port, the gateway decides on accept. Uses the pod of
test_transparent.py.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator

import pytest

from tests.e2e.test_transparent import (  # noqa: F401  (fixtures used by name)
    Pod,
    PodGateway,
    netns_works,
    pod,
    pod_gateway,
)
from tests.support.origins import TcpEcho

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

CLIENT = textwrap.dedent(
    """
    import socket, sys
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
        try:
            print(s.recv(100).decode() or "closed")
        except TimeoutError:
            print("no banner")
    """
)


@pytest.fixture(scope="module")
def banner_servers(pod: Pod) -> Iterator[tuple[TcpEcho, TcpEcho]]:
    with TcpEcho(pod.host_ip, 0, greeting=b"220 allowed ESMTP ready\r\n") as allowed, TcpEcho(
        pod.host_ip, 0, greeting=b"220 denied ESMTP ready\r\n"
    ) as denied:
        yield allowed, denied


@pytest.fixture(scope="module")
def sidecar(pod: Pod, banner_servers: tuple[TcpEcho, TcpEcho], tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodGateway]:
    allowed, denied = banner_servers
    config = f"""
        apiVersion: clrk.apoxy.dev/v1alpha1
        kind: EgressGateway
        metadata: {{name: eg}}
        spec:
          defaultPolicy: deny-all
          listeners:
          - {{name: smtp, protocol: TCP, port: {allowed.port}}}
          - {{name: other, protocol: TCP, port: {denied.port}}}
          ssrfGuard: {{allowCIDRs: ["{pod.host_ip}/32"]}}
        ---
        apiVersion: clrk.apoxy.dev/v1alpha1
        kind: EgressL4Route
        metadata: {{name: smtp}}
        spec:
          parentRefs: [{{name: eg, sectionName: smtp}}]
          rules:
          - matches: [{{destinationCIDRs: ["{pod.host_ip}/32"], ports: [{{port: {allowed.port}}}]}}]
        """
    with pod_gateway(pod, tmp_path_factory.mktemp("server-first"), config) as gw:
        yield gw


def _banner(pod: Pod, port: int) -> str:
    return pod.run(sys.executable, "-c", CLIENT, pod.host_ip, str(port), timeout=20).stdout.strip()


def test_the_banner_of_an_allowed_server_first_destination_arrives(pod: Pod, sidecar: PodGateway, banner_servers) -> None:
    allowed, _ = banner_servers
    assert _banner(pod, allowed.port) == "220 allowed ESMTP ready", sidecar.logs()


def test_a_denied_server_first_destination_is_closed_without_its_banner(pod: Pod, sidecar: PodGateway, banner_servers) -> None:
    _, denied = banner_servers
    assert _banner(pod, denied.port) in ("closed", "no banner")
