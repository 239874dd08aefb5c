"""No upstream connection opens unless a decision allowed exactly that destination, at an address we checked.

Every dial mitmproxy makes passes through `server_connect`, so this is where "decide before dialling" is
enforced:

1. the connection's record must hold an allowing verdict whose destination is the (host, port) being dialled
   (or a request decision must have added it), else the dial is refused;
2. the name becomes addresses: `upstreamTLS.hostAliases` first (no DNS query; trusted as configured), an IP
   literal as itself, anything else through our resolver (`egressproxy.resolver`) with the lookup family of
   the EgressGateway and the effective DNSPolicy: the chosen Backend's for a request routed to a Backend,
   the gateway's for everything else (connection-level dials - TLS passthrough, TCP, UDP - have no Backend);
3. each address, in order, is checked by the SSRF guard (`egressproxy.ssrf`; skipped for hostAliases and for
   destinations a configured backend named: Static hosts, a Service) and, when the DNSPolicy enforces
   `reverseLookup`, by its PTR; the first address that passes is written into `server.address` and is what
   mitmproxy connects to. There is no second lookup: a DNS answer that changes (rebinding) cannot slip an
   address past the check.

The name stays the TLS SNI. Once connected the Server's `address` is relabelled with the name again (its
`peername` keeps the IP), so mitmproxy reuses the connection for the next request to the same name exactly
as it would have without us.

A refused dial sets `server.error` to `egress: <reason>: <detail>`; mitmproxy then fails whatever wanted the
connection. HTTP requests are answered by `addons/gateway_errors.py`: 403 with `x-egress-denied:
destination-address-denied` / `reverse-dns-mismatch` (the Verdict is left in the connection record under the
dialled host and port), 502 `upstream-unreachable` when the name does not resolve to an address of the allowed
family. A raw TCP/UDP relay or a TLS passthrough tunnel is closed (an explicit-proxy CONNECT has already been
answered 200 by then: with lazy connections the dial happens after the tunnel opens).

Resolution has its own time limit (`RESOLVE_TIMEOUT`). A cancellation of the connecting task (the request
timeout) that lands while this hook awaits DNS is turned into `server.error` here: mitmproxy would otherwise
never report the dial as finished and the request would hang.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mitmproxy import connection
from mitmproxy.proxy import server_hooks

from egressproxy.engine.guard import fail_closed
from egressproxy.flowrecord import ConnectionRecord, Verdict
from egressproxy.hostnames import InvalidHostname, canonical_host, is_ip_literal
from egressproxy.resolver import DnsSettings, ResolutionError, order_by_family
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Snapshot
from egressproxy.ssrf import AddressCheck, SsrfGuard

log = logging.getLogger("egressproxy")

RESOLVE_TIMEOUT = 10.0  # the whole name -> checked address step (a query has 5 s; V4Preferred may ask twice)


class DialGuard:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.resolve_timeout = RESOLVE_TIMEOUT
        self._generation = -1
        self._dns: dict[Any, DnsSettings] = {}  # Backend ref (None: gateway) -> settings, for one generation
        self._ssrf: SsrfGuard = SsrfGuard()
        self._names: dict[str, tuple[str, int]] = {}  # server id -> (name, port) while it connects by address

    @fail_closed
    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        server: connection.Server = data.server
        if server.address is None:
            server.error = "egress: no destination"
            return
        original = server.address
        host, port = str(original[0]), int(original[1])
        try:
            host = canonical_host(host)
        except InvalidHostname:
            server.error = f"egress: invalid destination {host!r}"
            return
        record = self.state.connections.get(data.client.id)
        if record is None or not self._allowed(record, host, port):
            self.state.metrics.denials.labels("dial-not-allowed").inc()
            server.error = f"egress: dial to {host}:{port} was not allowed by any decision"
            log.warning("refused an undecided dial to %s:%s", host, port)
            return
        snapshot = self.state.snapshot
        if snapshot is None:
            server.error = "egress: dial refused: no configuration loaded"
            return
        try:
            address = await self._address(snapshot, record, host, port, server)
        except asyncio.CancelledError as e:
            # The request timeout (or the client going away) cancelled the connecting task while we awaited DNS.
            # Swallow it here and fail the dial instead, so mitmproxy reports the connection attempt as finished.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            cause = str(e) or "cancelled"
            server.error = f"egress: upstream-timeout: dial to {host}:{port} cancelled while resolving ({cause})"
            return
        if address is None:
            return  # refused: server.error says why
        if server.sni is None and not is_ip_literal(host):
            server.sni = host
        if address != str(original[0]):  # always dial the checked spelling, never a variant getaddrinfo parses
            server.address = (address, port)
            self._names[server.id] = original

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        name = self._names.pop(data.server.id, None)
        if name is not None and data.server.address != name:
            # Open connections refuse a new address (a guard against redirecting them); this only puts back the
            # label, the peer is `peername`. Requests to the same name then reuse this connection.
            object.__setattr__(data.server, "address", name)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._names.pop(data.server.id, None)

    def server_disconnected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._names.pop(data.server.id, None)

    async def _address(
        self, snapshot: Snapshot, record: ConnectionRecord, host: str, port: int, server: connection.Server
    ) -> str | None:
        """The checked address to dial for (host, port), or None after setting `server.error`."""
        gateway = snapshot.gateway
        key = (host, port)
        settings = self._settings(snapshot, record.upstream_backends.get(key))
        trusted = key in record.trusted_upstreams
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
                    candidates = await self.state.resolver.resolve(host, gateway.lookup_family, settings)
                return await self._choose(snapshot, record, host, port, server, candidates, source, trusted, settings)
        except ResolutionError as e:
            return self._unreachable(server, host, port, str(e))
        except TimeoutError:
            return self._unreachable(
                server, host, port, f"resolving {host} did not finish within {self.resolve_timeout:g}s"
            )

    async def _choose(
        self,
        snapshot: Snapshot,
        record: ConnectionRecord,
        host: str,
        port: int,
        server: connection.Server,
        candidates: tuple[str, ...],
        source: str,
        trusted: bool,
        settings: DnsSettings,
    ) -> str | None:
        refused: list[AddressCheck] = []
        mismatched: list[str] = []
        for address in candidates:
            if not trusted:
                check = self._ssrf.check(address)
                if not check.allowed:
                    refused.append(check)
                    continue
            if source == "dns" and settings.reverse_enforce:
                try:
                    ok, names = await self.state.resolver.reverse_matches(address, host, settings)
                except ResolutionError as e:
                    ok, names = False, ()
                    mismatched.append(f"{address} (PTR lookup failed: {e})")
                    continue
                if not ok:
                    mismatched.append(f"{address} (PTR {', '.join(names) if names else 'none'})")
                    continue
            return address
        if mismatched:
            wanted = host + "".join(f" or *.{s}" for s in settings.reverse_suffixes)
            detail = f"reverse DNS of {host} does not name {wanted}: {'; '.join(mismatched)}"
            verdict = Verdict.deny("reverse-dns-mismatch", settings.policy or _gateway_ref(snapshot), detail)
        else:
            described = "; ".join(c.describe() for c in refused)
            origin = "" if source == "literal" else f"{host} resolved to "
            detail = f"{origin}{described}; the SSRF guard refuses it (unless ssrfGuard.allowCIDRs lists it)"
            verdict = Verdict.deny("destination-address-denied", _gateway_ref(snapshot), detail)
            self.state.metrics.ssrf_denials.labels(refused[0].range if refused else "unknown").inc()
        self.state.metrics.denials.labels(verdict.reason).inc()
        record.dial_denials[(host, port)] = verdict
        server.error = f"egress: {verdict.reason}: {detail}"
        log.info("refused dial to %s:%s (%s): %s", host, port, verdict.reason, detail)
        return None

    def _unreachable(self, server: connection.Server, host: str, port: int, detail: str) -> None:
        self.state.metrics.upstream_errors.labels("upstream-unreachable").inc()
        server.error = f"egress: upstream-unreachable: {detail}"
        log.info("dial to %s:%s failed: %s", host, port, detail)
        return None

    def _settings(self, snapshot: Snapshot, backend: Any) -> DnsSettings:
        """The effective DNSPolicy (Backend > Gateway), compiled once per snapshot generation."""
        if snapshot.generation != self._generation:
            self._generation = snapshot.generation
            self._dns.clear()
            self._ssrf = SsrfGuard(snapshot.gateway.ssrf_allow, snapshot.gateway.ssrf_deny)
        settings = self._dns.get(backend)
        if settings is None:
            spec = snapshot.policies.effective("DNSPolicy", backend=backend)
            attached = snapshot.policies.policies("DNSPolicy", backend=backend)
            policy = f"DNSPolicy/{attached[0].ref.namespace}/{attached[0].ref.name}" if attached else ""
            settings = self._dns[backend] = DnsSettings.from_spec(spec, policy)
        return settings

    @staticmethod
    def _allowed(record: object, host: str, port: int) -> bool:
        verdict = getattr(record, "verdict", None)
        if verdict is not None and not verdict.allowed:
            return False
        return (host, port) in getattr(record, "allowed_upstreams", ())


def _gateway_ref(snapshot: Snapshot) -> str:
    ref = snapshot.gateway.ref
    return f"EgressGateway/{ref.namespace}/{ref.name}"
