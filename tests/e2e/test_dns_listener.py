"""The DNS listener (`--mode dns@HOST:PORT`): allowed names are answered, others NXDOMAIN, nothing forwarded."""

from __future__ import annotations

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.support.gateway import free_port

pytestmark = pytest.mark.e2e

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: dns, protocol: UDP, port: 53}
  - {name: pass, protocol: TLS, tls: {mode: Passthrough}}
  - {name: tcp, protocol: TCP}
  upstreamTLS:
    hostAliases:
    - ip: 127.0.0.7
      hostnames: [allowed.example.test, db.example.test]
    - ip: 127.0.0.8
      hostnames: [unrouted.example.test]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: allowed}
spec:
  parentRefs: [{name: eg, sectionName: pass}]
  hostnames: [allowed.example.test]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressL4Route
metadata: {name: db}
spec:
  parentRefs: [{name: eg, sectionName: tcp}]
  rules:
  - matches: [{destinationHostnames: [db.example.test], ports: [{port: 5432}]}]
"""


@pytest.fixture
def resolver_port(gateway):
    port = free_port()
    gw = gateway(CONFIG, modes=[f"dns@127.0.0.1:{port}"])
    return gw, port


def _ask(port: int, name: str, rdtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=5)


@pytest.mark.parametrize("name", ["allowed.example.test", "ALLOWED.example.test.", "db.example.test"])
def test_a_name_a_route_allows_is_answered(resolver_port, name):
    gw, port = resolver_port
    answer = _ask(port, name)
    assert answer.rcode() == dns.rcode.NOERROR
    addresses = [r.address for rrset in answer.answer for r in rrset]
    assert addresses == ["127.0.0.7"]


def test_an_unrouted_name_is_nxdomain_even_when_it_resolves(resolver_port):
    gw, port = resolver_port
    assert _ask(port, "unrouted.example.test").rcode() == dns.rcode.NXDOMAIN
    assert _ask(port, "example.com").rcode() == dns.rcode.NXDOMAIN
    assert 'egress_dns_answers_total{result="nxdomain"} 2.0' in gw.metrics()


def test_other_record_types_of_an_allowed_name_get_no_data(resolver_port):
    gw, port = resolver_port
    answer = _ask(port, "allowed.example.test", "TXT")
    assert answer.rcode() == dns.rcode.NOERROR and answer.answer == []
    aaaa = _ask(port, "allowed.example.test", "AAAA")
    assert aaaa.rcode() == dns.rcode.NOERROR and aaaa.answer == []  # the alias is IPv4 only
