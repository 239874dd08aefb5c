"""The DNS listener (`--mode dns@HOST:PORT`, an EgressGateway UDP listener on port 53).

Names the routes allow are resolved by the gateway's own resolver, every answer passes the SSRF guard, and
each answered address is bound to its name for later transparent connections (egressproxy/dns_bindings.py).
Other names get NXDOMAIN under deny-all. Nothing is ever forwarded as-is to another resolver, so UDP/53 cannot
be used as a tunnel; a query this addon does not answer fails (mitmproxy answers SERVFAIL). The SSRF guard and
the gateway's DNS settings are the snapshot's compiled ones, never rebuilt per query.
"""

from __future__ import annotations

import ipaddress
import logging

from mitmproxy import dns
from mitmproxy.net.dns import response_codes, types
from mitmproxy.proxy.mode_specs import DnsMode

from egressproxy.decisions import dns_name_allowed
from egressproxy.engine.guard import fail_closed
from egressproxy.hostnames import InvalidHostname, canonical_host
from egressproxy.resolver import ResolutionError
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Snapshot

log = logging.getLogger("egressproxy")

ANSWER_TTL = 30  # seconds, clamped by the gateway's DNSPolicy minTTL/maxTTL
_FAMILY_FOR_TYPE = {types.A: "V4Only", types.AAAA: "V6Only"}
_BLOCKED_BY_FAMILY = {"V4Only": types.AAAA, "V6Only": types.A}


class DnsAnswers:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    @fail_closed
    async def dns_request(self, flow: dns.DNSFlow) -> None:
        if not isinstance(flow.client_conn.proxy_mode, DnsMode) or flow.response is not None:
            return
        flow.response = await self._answer(flow.request)

    async def _answer(self, request: dns.DNSMessage) -> dns.DNSMessage:
        snapshot = self.state.snapshot
        question = request.question
        if snapshot is None:
            return request.fail(response_codes.SERVFAIL)
        if not any(listener.protocol == "UDP" and listener.port == 53 for listener in snapshot.gateway.listeners):
            return request.fail(response_codes.REFUSED)  # the config declares no DNS listener
        if question is None:
            return request.fail(response_codes.FORMERR)
        try:
            name = canonical_host(question.name)
        except InvalidHostname:
            return request.fail(response_codes.NXDOMAIN)
        verdict = dns_name_allowed(snapshot, name)
        self.state.metrics.dns_answers.labels("allowed" if verdict.allowed else "nxdomain").inc()
        if not verdict.allowed:
            return request.fail(response_codes.NXDOMAIN)
        family = _FAMILY_FOR_TYPE.get(question.type)
        if family is None or _BLOCKED_BY_FAMILY.get(snapshot.gateway.lookup_family) == question.type:
            return request.succeed([])  # NODATA: only A and AAAA are answered
        return await self._resolve(request, snapshot, name, family)

    async def _resolve(self, request: dns.DNSMessage, snapshot: Snapshot, name: str, family: str) -> dns.DNSMessage:
        gateway = snapshot.gateway
        settings = snapshot.compiled.dns_for(None)  # the gateway's DNSPolicy: a DNS answer names no Backend
        guard = snapshot.compiled.ssrf_guard
        aliases = gateway.host_aliases.get(name)
        if aliases:
            addresses, trusted = aliases, True
        else:
            try:
                addresses, trusted = await self.state.resolver.resolve(name, family, settings), False
            except ResolutionError:
                return request.fail(response_codes.NXDOMAIN)
        ttl = int(settings.clamp(ANSWER_TTL))
        records, denied = [], 0
        for address in addresses:
            ip = ipaddress.ip_address(address)
            if (family == "V4Only") != (ip.version == 4):
                continue
            if not trusted and not guard.allows(ip):
                self.state.metrics.denials.labels("destination-address-denied").inc()
                denied += 1
                continue
            self.state.dns_bindings.bind(str(ip), name, ttl)
            question_name = request.question.name  # type: ignore[union-attr]  # checked by _answer
            if isinstance(ip, ipaddress.IPv4Address):
                records.append(dns.ResourceRecord.A(question_name, ip, ttl=ttl))
            else:
                records.append(dns.ResourceRecord.AAAA(question_name, ip, ttl=ttl))
        if not records and denied:
            return request.fail(response_codes.NXDOMAIN)  # every address is one the SSRF guard refuses
        return request.succeed(records)
