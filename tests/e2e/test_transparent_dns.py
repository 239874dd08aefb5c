"""The DNS listener in a sidecar: the pod's UDP/53 is redirected to it, and its answers bind addresses to names.

A transparent TCP connection carries no name of its own; after the gateway's DNS listener answered
`db.example.test -> <address>`, a connection to that address is matched by the EgressL4Route's
destinationHostnames. Before the answer, the same connection is refused. Uses the pod of test_transparent.py.
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

DNS_PORT = 15053

CLIENT = textwrap.dedent(
    """
    import socket, sys
    import dns.message, dns.query, dns.rcode
    resolver_ip, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    def connect(ip):
        try:
            with socket.create_connection((ip, port), timeout=5) as s:
                s.sendall(b"hello")
                return s.recv(100).decode() or "closed"
        except OSError as e:
            return f"error {e.__class__.__name__}"
    print("before:", connect(resolver_ip))
    answer = dns.query.udp(dns.message.make_query(name, "A"), resolver_ip, port=53, timeout=5)
    print("rcode:", dns.rcode.to_text(answer.rcode()))
    addresses = [r.address for rrset in answer.answer for r in rrset]
    print("answer:", ",".join(addresses))
    if addresses:
        print("after:", connect(addresses[0]))
    """
)


@pytest.fixture(scope="module")
def echo(pod: Pod) -> Iterator[TcpEcho]:
    with TcpEcho(pod.host_ip, 0) as server:
        yield server


@pytest.fixture(scope="module")
def dns_sidecar(pod: Pod, echo: TcpEcho, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodGateway]:
    config = f"""
        apiVersion: clrk.apoxy.dev/v1alpha1
        kind: EgressGateway
        metadata: {{name: eg}}
        spec:
          defaultPolicy: deny-all
          listeners:
          - {{name: dns, protocol: UDP, port: 53}}
          - {{name: tcp, protocol: TCP, port: {echo.port}}}
          upstreamTLS:
            hostAliases:
            - ip: {pod.host_ip}
              hostnames: [db.example.test, other.example.test]
        ---
        apiVersion: clrk.apoxy.dev/v1alpha1
        kind: EgressL4Route
        metadata: {{name: db}}
        spec:
          parentRefs: [{{name: eg, sectionName: tcp}}]
          rules:
          - matches: [{{destinationHostnames: [db.example.test], ports: [{{port: {echo.port}}}]}}]
        """
    with pod_gateway(
        pod, tmp_path_factory.mktemp("transparent-dns"), config,
        extra_modes=(f"dns@127.0.0.1:{DNS_PORT}",), iptables=("--dns-port", str(DNS_PORT)),
    ) as gw:
        yield gw


def _client(pod: Pod, name: str, port: int) -> dict[str, str]:
    out = pod.run(sys.executable, "-c", CLIENT, pod.host_ip, name, str(port), timeout=30)
    pairs = (line.partition(":") for line in out.stdout.strip().splitlines())
    return {key: value.strip() for key, _, value in pairs}


def test_a_connection_to_an_answered_address_is_matched_by_its_hostname(pod: Pod, dns_sidecar: PodGateway, echo: TcpEcho) -> None:
    result = _client(pod, "db.example.test", echo.port)
    assert not result["before"].startswith("echo:"), result  # no name yet: refused
    assert result["rcode"] == "NOERROR" and result["answer"] == pod.host_ip
    assert result["after"] == "echo:hello", dns_sidecar.logs()


def test_an_unrouted_name_gets_nxdomain_through_the_redirect(pod: Pod, dns_sidecar: PodGateway, echo: TcpEcho) -> None:
    result = _client(pod, "other.example.test", echo.port)
    assert result["rcode"] == "NXDOMAIN" and result["answer"] == ""
