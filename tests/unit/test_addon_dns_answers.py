"""addons/dns_answers.py: the DNS listener answers names the routes allow, and only those.

Driven with mitmproxy's DNS test flows (tflow.tdnsflow) and a stand-in resolver: what the client sees is the
response code and the answer records; what later connections see is the IP -> name binding each answer leaves.
A name no route allows is NXDOMAIN under deny-all; an address the SSRF guard refuses is never answered.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mitmproxy import dns
from mitmproxy.net.dns import response_codes, types
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow, tutils

from addons.dns_answers import DnsAnswers
from egressproxy.resolver import ResolutionError
from egressproxy.runtime.state import GatewayState
from tests.support.addon_state import compile_snapshot, counter, state_for

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners:
  - {{name: https, protocol: HTTPS, tls: {{mode: Terminate, caCertRef: {{name: ca}}}}}}
  {dns_listener}
  upstreamTLS:
    hostAliases:
    - {{ip: 10.0.0.5, hostnames: [internal.example.com]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}]
  hostnames: [api.example.com, internal.example.com, private.example.com]
"""

DNS_LISTENER = "- {name: dns, protocol: UDP, port: 53}"

# what the stand-in resolver knows: a public address each, and a name that resolves into a private network
RESOLVED = {
    ("api.example.com", "V4Only"): ("93.184.216.34",),
    ("api.example.com", "V6Only"): ("2606:2800:220:1::1",),
    ("private.example.com", "V4Only"): ("10.9.9.9",),
}


@pytest.fixture(scope="module")
def snapshot():
    return compile_snapshot(CONFIG.format(dns_listener=DNS_LISTENER), ca="ca")


@pytest.fixture
def state(snapshot, tmp_path: Path, monkeypatch) -> GatewayState:
    state = state_for(snapshot, tmp_path)
    asked: list[tuple[str, str]] = []

    async def resolve(name: str, family: str, settings: object = None) -> tuple[str, ...]:
        asked.append((name, family))
        if (name, family) not in RESOLVED:
            raise ResolutionError(f"{name}: no such name")
        return RESOLVED[(name, family)]

    monkeypatch.setattr(state.resolver, "resolve", resolve)
    state.asked = asked  # type: ignore[attr-defined]
    return state


def _query(addon: DnsAnswers, name: str, qtype: int = types.A, *, mode: str = "dns") -> dns.DNSFlow:
    flow = tflow.tdnsflow(req=tutils.tdnsreq(questions=[dns.Question(name, qtype, dns.classes.IN)]))
    flow.client_conn.proxy_mode = ProxyMode.parse(mode)
    with taddons.context(addon):
        asyncio.run(addon.dns_request(flow))
    return flow


def _answers(flow: dns.DNSFlow) -> list[str]:
    assert flow.response is not None
    return [str(answer) for answer in flow.response.answers]


@pytest.mark.parametrize(
    ("name", "qtype", "addresses"),
    [
        ("api.example.com", types.A, ["93.184.216.34"]),
        ("API.Example.com.", types.A, ["93.184.216.34"]),  # any spelling of an allowed name
        ("api.example.com", types.AAAA, ["2606:2800:220:1::1"]),
        ("internal.example.com", types.A, ["10.0.0.5"]),  # a hostAlias: trusted as configured, no lookup
    ],
)
def test_an_allowed_name_is_answered_and_bound_for_later_connections(state, name, qtype, addresses) -> None:
    flow = _query(DnsAnswers(state), name, qtype)
    assert flow.response is not None and flow.response.response_code == response_codes.NOERROR
    assert _answers(flow) == addresses
    assert all(answer.ttl > 0 for answer in flow.response.answers)
    for address in addresses:
        assert state.dns_bindings.name_for(address) == name.lower().rstrip(".")
    assert counter(state, "egress_dns_answers_total", result="allowed") == 1


def test_a_host_alias_is_answered_without_asking_any_resolver(state) -> None:
    _query(DnsAnswers(state), "internal.example.com")
    assert state.asked == []


@pytest.mark.parametrize("name", ["unrouted.example.com", "tunnel.attacker.example", "bad_name!"])
def test_a_name_no_route_allows_is_nxdomain_and_never_resolved(state, name: str) -> None:
    flow = _query(DnsAnswers(state), name)
    assert flow.response is not None and flow.response.response_code == response_codes.NXDOMAIN
    assert flow.response.answers == []
    assert state.asked == []  # never forwarded: UDP/53 is no tunnel


def test_an_address_the_ssrf_guard_refuses_is_never_answered(state) -> None:
    flow = _query(DnsAnswers(state), "private.example.com")
    assert flow.response is not None and flow.response.response_code == response_codes.NXDOMAIN
    assert state.dns_bindings.name_for("10.9.9.9") is None
    assert counter(state, "egress_denials_total", reason="destination-address-denied") == 1


def test_a_name_that_does_not_resolve_is_nxdomain(state) -> None:
    flow = _query(DnsAnswers(state), "private.example.com", types.AAAA)
    assert flow.response is not None and flow.response.response_code == response_codes.NXDOMAIN


@pytest.mark.parametrize("qtype", [types.MX, types.TXT, types.CNAME])
def test_other_record_types_of_an_allowed_name_get_no_data(state, qtype: int) -> None:
    flow = _query(DnsAnswers(state), "api.example.com", qtype)
    assert flow.response is not None and flow.response.response_code == response_codes.NOERROR
    assert flow.response.answers == []


def test_without_a_configuration_every_query_fails(tmp_path: Path) -> None:
    flow = _query(DnsAnswers(state_for(None, tmp_path)), "api.example.com")
    assert flow.response is not None and flow.response.response_code == response_codes.SERVFAIL


def test_a_config_without_a_dns_listener_refuses(tmp_path: Path) -> None:
    snapshot = compile_snapshot(CONFIG.format(dns_listener=""), ca="ca")
    flow = _query(DnsAnswers(state_for(snapshot, tmp_path)), "api.example.com")
    assert flow.response is not None and flow.response.response_code == response_codes.REFUSED


def test_a_query_without_a_question_is_a_format_error(state) -> None:
    flow = tflow.tdnsflow(req=tutils.tdnsreq(questions=[]))
    addon = DnsAnswers(state)
    with taddons.context(addon):
        asyncio.run(addon.dns_request(flow))
    assert flow.response is not None and flow.response.response_code == response_codes.FORMERR


def test_dns_on_another_mode_is_not_ours_to_answer(state) -> None:
    flow = _query(DnsAnswers(state), "api.example.com", mode="regular")
    assert flow.response is None


def test_an_answer_already_given_is_left_alone(state) -> None:
    flow = tflow.tdnsflow(resp=True)
    before = flow.response
    addon = DnsAnswers(state)
    with taddons.context(addon):
        asyncio.run(addon.dns_request(flow))
    assert flow.response is before
