"""From a decided (name, port) to the one address that may be dialled: aliases, DNS, SSRF guard, reverse DNS.

Used by the dial guard for every dial, and by the CONNECT gate to refuse a tunnel to a destination the guard
would refuse anyway before answering 200 (the address it checked is then pinned for the dial: one lookup, no
rebinding between check and dial). Order:

1. `upstreamTLS.hostAliases` first (no DNS query; trusted as configured), an IP literal as itself, anything else
   through our resolver with the EgressGateway's lookup family and the effective DNSPolicy (the chosen
   Backend's for a request routed to a Backend, else the gateway's);
2. each address in order is checked by the SSRF guard (skipped for hostAliases and for destinations a
   configured backend named) and, when the DNSPolicy enforces `reverseLookup`, by its PTR; the first address
   that passes is the answer;
3. the RegionAllowListPolicy's GeoIP source, on that address (egressproxy/regions.py): the one region source
   only knowable after DNS, checked here because every connection the gateway opens passes through here.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from egressproxy.flowrecord import ConnectionRecord, Verdict
from egressproxy.hostnames import is_ip_literal
from egressproxy.metrics import GatewayMetrics
from egressproxy.outcomes import DialOutcome, GatewayFailure
from egressproxy.regions import REGION_NOT_ALLOWED, check_address, check_candidate
from egressproxy.resolver import DnsSettings, ResolutionError, Resolver, order_by_family
from egressproxy.snapshot import Snapshot
from egressproxy.ssrf import AddressCheck
from egressproxy.upstreams import Upstream

__all__ = ["Destination", "DestinationCheck", "RESOLVE_TIMEOUT"]

log = logging.getLogger("egressproxy")

RESOLVE_TIMEOUT = 10.0  # the whole name -> checked address step (a query has 5 s; V4Preferred may ask twice)


@dataclass(frozen=True, slots=True)
class Destination:
    """The outcome: an address to dial, or a denial (403), or a failure (502 `upstream-unreachable`)."""

    address: str | None = None
    denial: Verdict | None = None
    failure: GatewayFailure | None = None

    @property
    def outcome(self) -> DialOutcome | None:
        """The typed refusal the dial guard leaves on the connection record (None: an address to dial)."""
        return self.denial if self.denial is not None else self.failure

    @property
    def unreachable(self) -> str | None:
        """The detail of an `upstream-unreachable` (None otherwise)."""
        return self.failure.detail if self.failure is not None else None

    @property
    def error(self) -> str | None:
        """`server.error` text for a refused dial (for mitmproxy's logs; the answer comes from `outcome`)."""
        if self.denial is not None:
            return f"egress: {self.denial.reason}: {self.denial.message}"
        if self.failure is not None:
            return self.failure.server_error
        return None


class DestinationCheck:
    def __init__(self, resolver: Resolver, metrics: GatewayMetrics) -> None:
        self.resolver = resolver
        self.metrics = metrics
        self.resolve_timeout = RESOLVE_TIMEOUT

    async def check(self, snapshot: Snapshot, record: ConnectionRecord, host: str, port: int) -> Destination:
        key = (host, port)
        pinned = record.pinned_addresses.get(key)
        if pinned is not None:
            return Destination(pinned)  # checked when the CONNECT was decided
        gateway = snapshot.gateway
        upstream = record.upstreams.get(key)
        backend = upstream.backend if upstream is not None else None
        settings = self.settings(snapshot, backend.ref if backend is not None else None)
        trusted = upstream is not None and upstream.trusted
        source = "dns"
        try:
            async with asyncio.timeout(self.resolve_timeout):
                aliases = gateway.host_aliases.get(host)
                if aliases:
                    source, trusted = "hostAliases", True
                    candidates = order_by_family(aliases, gateway.lookup_family)
                    if not candidates:
                        raise ResolutionError(
                            f"no address of the allowed family for {host} in hostAliases "
                            f"(lookupFamily {gateway.lookup_family})"
                        )
                elif is_ip_literal(host):
                    source, candidates = "literal", (host,)
                else:
                    candidates = await self.resolver.resolve(host, gateway.lookup_family, settings)
                chosen = await self._choose(snapshot, record, host, port, candidates, source, trusted, settings)
                return self._region(snapshot, record, host, port, chosen)
        except ResolutionError as e:
            return self._unreachable(host, port, str(e))
        except TimeoutError:
            return self._unreachable(host, port, f"resolving {host} did not finish within {self.resolve_timeout:g}s")

    async def _choose(
        self,
        snapshot: Snapshot,
        record: ConnectionRecord,
        host: str,
        port: int,
        candidates: tuple[str, ...],
        source: str,
        trusted: bool,
        settings: DnsSettings,
    ) -> Destination:
        refused: list[AddressCheck] = []
        mismatched: list[str] = []
        for address in candidates:
            if not trusted:
                check = snapshot.compiled.ssrf_guard.check(address)
                if not check.allowed:
                    refused.append(check)
                    continue
            if source == "dns" and settings.reverse_enforce:
                try:
                    ok, names = await self.resolver.reverse_matches(address, host, settings)
                except ResolutionError as e:
                    mismatched.append(f"{address} (PTR lookup failed: {e})")
                    continue
                if not ok:
                    mismatched.append(f"{address} (PTR {', '.join(names) if names else 'none'})")
                    continue
            return Destination(address)
        if mismatched:
            wanted = host + "".join(f" or *.{s}" for s in settings.reverse_suffixes)
            detail = f"reverse DNS of {host} does not name {wanted}: {'; '.join(mismatched)}"
            verdict = Verdict.deny("reverse-dns-mismatch", settings.policy or _gateway_ref(snapshot), detail)
        else:
            described = "; ".join(c.describe() for c in refused)
            origin = "" if source == "literal" else f"{host} resolved to "
            detail = f"{origin}{described}; the SSRF guard refuses it (unless ssrfGuard.allowCIDRs lists it)"
            verdict = Verdict.deny("destination-address-denied", _gateway_ref(snapshot), detail)
            self.metrics.ssrf_denials.labels(refused[0].range if refused else "unknown").inc()
        self.metrics.denials.labels(verdict.reason).inc()
        log.info("refused dial to %s:%s (%s): %s", host, port, verdict.reason, detail)
        return Destination(denial=verdict)

    def _region(self, snapshot: Snapshot, record: ConnectionRecord, host: str, port: int, chosen: Destination) -> Destination:
        """The RegionAllowListPolicy at dial time (docs/policies.md): a candidate the request decision left
        `pending` is decided by GeoIP of the address just chosen; a dial no request decision checked (a
        tunnel, a connection of the gateway's own) gets the listener's or gateway's policy, whole. A dial to
        a parent proxy is not checked (the parent resolves the destination and applies its own policy)."""
        if chosen.address is None or not snapshot.compiled.regions or (host, port) in snapshot.compiled.parents:
            return chosen
        upstream = record.upstreams.get((host, port))
        check = upstream.region_check if upstream is not None else None
        if check is not None and not check.pending:
            return chosen  # decided (and any Report counted) with the request
        if check is None:
            policy = snapshot.compiled.region_policy(snapshot.policies, listener=record.listener)
            if policy is None:
                return chosen
            check = check_candidate(policy, upstream or Upstream(host, port))
        if check.pending:
            check = check_address(check.policy, f"{host}:{port}", chosen.address)
        if not check.would_deny:
            return chosen
        if check.allowed:  # Report mode
            self.metrics.policy_reports.labels(REGION_NOT_ALLOWED, check.policy.name).inc()
            log.info("report: %s would deny the dial to %s (enforcementMode Report): %s", check.policy.name, host, check.detail)
            return chosen
        verdict = Verdict.deny(REGION_NOT_ALLOWED, check.policy.name, check.detail)
        self.metrics.denials.labels(REGION_NOT_ALLOWED).inc()
        log.info("refused dial to %s:%s (%s): %s", host, port, REGION_NOT_ALLOWED, check.detail)
        return Destination(denial=verdict)

    def _unreachable(self, host: str, port: int, detail: str) -> Destination:
        self.metrics.upstream_errors.labels("upstream-unreachable").inc()
        log.info("dial to %s:%s failed: %s", host, port, detail)
        return Destination(failure=GatewayFailure("upstream-unreachable", detail))

    @staticmethod
    def settings(snapshot: Snapshot, backend: Any) -> DnsSettings:
        """The effective DNSPolicy (Backend > Gateway), compiled with the snapshot (seam 3)."""
        return snapshot.compiled.dns_for(backend)


def _gateway_ref(snapshot: Snapshot) -> str:
    ref = snapshot.gateway.ref
    return f"EgressGateway/{ref.namespace}/{ref.name}"
