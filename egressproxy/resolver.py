"""The gateway's own resolver: dnspython on the event loop, lookup families, a TTL cache, PTR checks.

mitmproxy would resolve a name with `getaddrinfo` at dial time and try every address; we resolve first (here),
check the addresses (SSRF guard, reverse lookup), and dial exactly the address that was checked. Nothing here
blocks the loop: queries go out through `dns.asyncresolver`, each bounded by a timeout (5 s by default).

Lookup families (EgressGateway `spec.dns.lookupFamily`, with the meanings of Apoxy's API):

- `V4Preferred` (default): A records; AAAA is asked only when the name has no A record.
- `V4Only`: A records only; an AAAA-only name does not resolve.
- `V6Only`: AAAA records only; an A-only name does not resolve.
- `Auto`: AAAA when any exists, otherwise A (Envoy's stock behaviour).
- `All`: A and AAAA, both asked at once; the union, rotated on every lookup (load spread across it).

DNSPolicy (`policy.egressproxy.io/v1alpha1`, attached to the EgressGateway or a Backend):

- `resolvers`: `["IP:port", "[IPv6]:port"]`; default the system's (`/etc/resolv.conf`, read once).
- `minTTL` / `maxTTL`: an answer (positive or negative) is reused for its TTL clamped to [minTTL, maxTTL];
  `minTTL: 0s` with a TTL of 0 means every dial asks again. The cache is keyed by (resolvers, name, record
  type) and stores the TTL as the server said it, so two policies sharing resolvers each apply their own
  clamps to the same entry.
- `reverseLookup.enforce`: the PTR of the address to be dialled must name the requested host or a name under
  one of `allowedSuffixes` (canonical, label-aligned comparison); otherwise the dial is denied
  (`reverse-dns-mismatch`).

Names are always asked as absolute names (no search list, no /etc/hosts): an egress gateway resolves the
names clients send, never a short name completed by the pod's search domains. `upstreamTLS.hostAliases`
answer before any of this (the dial guard looks them up first).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from egressproxy.hostnames import InvalidHostname, canonical_host

__all__ = [
    "LOOKUP_FAMILIES",
    "DnsSettings",
    "Resolver",
    "ResolutionError",
    "order_by_family",
    "parse_resolver",
    "ptr_matches",
]

log = logging.getLogger("egressproxy")

LOOKUP_FAMILIES = ("V4Preferred", "V4Only", "V6Only", "Auto", "All")
DEFAULT_TIMEOUT = 5.0
CACHE_SIZE = 8192


class ResolutionError(Exception):
    """The name has no address the dial may use (reason `upstream-unreachable`)."""


def parse_resolver(value: str) -> tuple[str, int]:
    """`10.0.0.10:53` or `[fd00::10]:53` to (address, port) (the schema has already validated it)."""
    host, _, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return str(ipaddress.ip_address(host)), int(port)


def _suffix(value: str) -> str:
    return canonical_host(value.strip().removeprefix("."))


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """The effective DNSPolicy for one dial (the defaults when none is attached)."""

    resolvers: tuple[tuple[str, int], ...] = ()  # () = the system's
    min_ttl: float = 0.0
    max_ttl: float | None = None
    reverse_enforce: bool = False
    reverse_suffixes: tuple[str, ...] = ()
    policy: str = ""  # the deciding DNSPolicy as `DNSPolicy/namespace/name`, for denial bodies

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], policy: str = "") -> "DnsSettings":
        reverse = spec.get("reverseLookup") or {}
        max_ttl = spec.get("maxTTL")
        return cls(
            resolvers=tuple(parse_resolver(r) for r in spec.get("resolvers") or ()),
            min_ttl=float(spec.get("minTTL") or 0.0),
            max_ttl=float(max_ttl) if max_ttl is not None else None,
            reverse_enforce=bool(reverse.get("enforce", False)),
            reverse_suffixes=tuple(_suffix(s) for s in reverse.get("allowedSuffixes") or ()),
            policy=policy,
        )

    def clamp(self, ttl: float) -> float:
        if self.max_ttl is not None:
            ttl = min(ttl, self.max_ttl)
        return max(ttl, self.min_ttl)


def order_by_family(addresses: Iterable[str], family: str) -> tuple[str, ...]:
    """Configured addresses (hostAliases) in the order the lookup family would give them from DNS."""
    v4 = [a for a in addresses if ":" not in a]
    v6 = [a for a in addresses if ":" in a]
    if family == "V4Only":
        return tuple(v4)
    if family == "V6Only":
        return tuple(v6)
    if family == "Auto":
        return tuple(v6 or v4)
    if family == "All":
        return tuple(v4 + v6)
    return tuple(v4 or v6)  # V4Preferred


def ptr_matches(names: Iterable[str], host: str, suffixes: Iterable[str]) -> bool:
    """True when a PTR name is the host itself or lies under one of the suffixes (label-aligned)."""
    suffixes = tuple(suffixes)
    for name in names:
        if name == host:
            return True
        if any(name == s or name.endswith("." + s) for s in suffixes):
            return True
    return False


@dataclass(slots=True)
class _Entry:
    values: tuple[str, ...]  # addresses (A/AAAA) or canonical names (PTR); () for a negative answer
    ttl: float  # as the server said (negative answers: the SOA's negative TTL)
    fetched: float  # clock() when it arrived
    nxdomain: bool = False


_Key = tuple[tuple[tuple[str, int], ...], str, str]  # (resolvers, name, record type)


class Resolver:
    """Async lookups with a shared TTL cache; one in-flight query per (resolvers, name, type)."""

    def __init__(
        self,
        metrics: Any = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        cache_size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.timeout = timeout
        self.cache_size = cache_size
        self.clock = clock
        self._cache: OrderedDict[_Key, _Entry] = OrderedDict()
        self._inflight: dict[_Key, asyncio.Future[_Entry]] = {}
        self._resolvers: dict[tuple[tuple[str, int], ...], dns.asyncresolver.Resolver] = {}
        self._rotation: dict[str, int] = {}
        self._system_error: str | None = None
        try:  # read /etc/resolv.conf now (start-up), not on the event loop at the first dial
            self._dns_resolver(())
        except ResolutionError as e:
            self._system_error = str(e)

    # ------------------------------------------------------------------------------------------------ lookups

    async def resolve(self, name: str, family: str, settings: DnsSettings = DnsSettings()) -> tuple[str, ...]:
        """The addresses of a canonical host name, in dial order; ResolutionError when there is none."""
        if family == "V4Only":
            found = await self._query(name, "A", settings)
        elif family == "V6Only":
            found = await self._query(name, "AAAA", settings)
        elif family == "Auto":
            found = await self._query(name, "AAAA", settings)
            if not found.values and not found.nxdomain:
                found = await self._query(name, "A", settings)
        elif family == "All":
            return await self._resolve_all(name, settings)
        else:  # V4Preferred
            found = await self._query(name, "A", settings)
            if not found.values and not found.nxdomain:
                found = await self._query(name, "AAAA", settings)
        if not found.values:
            raise ResolutionError(_no_address(name, family, found.nxdomain))
        return found.values

    async def _resolve_all(self, name: str, settings: DnsSettings) -> tuple[str, ...]:
        results = await asyncio.gather(
            self._query(name, "A", settings), self._query(name, "AAAA", settings), return_exceptions=True
        )
        values: list[str] = []
        nxdomain = False
        errors: list[BaseException] = []
        for result in results:
            if isinstance(result, BaseException):
                errors.append(result)
            else:
                values.extend(result.values)
                nxdomain = nxdomain or result.nxdomain
        if not values:
            if errors:
                raise errors[0] if isinstance(errors[0], ResolutionError) else ResolutionError(str(errors[0]))
            raise ResolutionError(_no_address(name, "All", nxdomain))
        turn = self._rotation.get(name, 0)
        self._rotation[name] = turn + 1
        if len(self._rotation) > self.cache_size:
            self._rotation.clear()
        start = turn % len(values)
        return tuple(values[start:] + values[:start])

    async def reverse(self, address: str, settings: DnsSettings = DnsSettings()) -> tuple[str, ...]:
        """The PTR names of an address (canonical, without the trailing dot); () when there is none."""
        name = dns.reversename.from_address(address).to_text(omit_final_dot=True)
        return (await self._query(name, "PTR", settings)).values

    async def reverse_matches(self, address: str, host: str, settings: DnsSettings) -> tuple[bool, tuple[str, ...]]:
        """(does the address's PTR name the host or an allowed suffix?, the PTR names seen)."""
        names = await self.reverse(address, settings)
        return ptr_matches(names, host, settings.reverse_suffixes), names

    # ------------------------------------------------------------------------------------------------ cache

    async def _query(self, name: str, rdtype: str, settings: DnsSettings) -> _Entry:
        key: _Key = (settings.resolvers, name, rdtype)
        entry = self._cache.get(key)
        if entry is not None and self.clock() < entry.fetched + settings.clamp(entry.ttl):
            self._cache.move_to_end(key)
            if self.metrics is not None:
                self.metrics.dns_cache_hits.inc()
            return entry
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(key))
            self._inflight[key] = pending
            pending.add_done_callback(functools.partial(self._settled, key))
        # shield: a dial that is cancelled while waiting must not cancel the query others may be waiting on
        return await asyncio.shield(pending)

    def _settled(self, key: _Key, future: asyncio.Future[_Entry]) -> None:
        self._inflight.pop(key, None)
        if not future.cancelled():
            future.exception()  # retrieved here, so a failure nobody waited for is not logged as "never retrieved"

    async def _fetch(self, key: _Key) -> _Entry:
        resolvers, name, rdtype = key
        result = "error"
        try:
            entry = await asyncio.wait_for(self._ask(resolvers, name, rdtype), self.timeout + 1.0)
            result = "ok" if entry.values else ("nxdomain" if entry.nxdomain else "nodata")
        except (asyncio.TimeoutError, dns.exception.Timeout) as e:
            result = "timeout"
            raise ResolutionError(f"DNS lookup of {name} ({rdtype}) got no answer within {self.timeout:g}s") from e
        except ResolutionError:
            raise
        except dns.exception.DNSException as e:
            raise ResolutionError(f"DNS lookup of {name} ({rdtype}) failed: {e}") from e
        finally:
            if self.metrics is not None:
                self.metrics.dns_lookups.labels(result).inc()
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return entry

    async def _ask(self, resolvers: tuple[tuple[str, int], ...], name: str, rdtype: str) -> _Entry:
        resolver = self._dns_resolver(resolvers)
        qname = dns.name.from_text(name)  # absolute
        try:
            answer = await resolver.resolve(
                qname, rdtype, raise_on_no_answer=False, lifetime=self.timeout, search=False
            )
        except dns.resolver.NXDOMAIN as e:
            return _Entry((), _negative_ttl(e, qname), self.clock(), nxdomain=True)
        ttl = float(answer.chaining_result.minimum_ttl)
        values: tuple[str, ...] = ()
        if answer.rrset is not None:
            if rdtype == "PTR":
                values = tuple(_canonical_ptr(r.target.to_text(omit_final_dot=True)) for r in answer.rrset)
                values = tuple(v for v in values if v)
            else:
                values = tuple(str(ipaddress.ip_address(r.address)) for r in answer.rrset)
        return _Entry(values, ttl, self.clock())

    def _dns_resolver(self, resolvers: tuple[tuple[str, int], ...]) -> dns.asyncresolver.Resolver:
        resolver = self._resolvers.get(resolvers)
        if resolver is not None:
            return resolver
        if resolvers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in resolvers]
        else:
            if self._system_error is not None:
                raise ResolutionError(self._system_error)
            try:
                resolver = dns.asyncresolver.Resolver()
            except (dns.resolver.NoResolverConfiguration, OSError) as e:
                raise ResolutionError(f"no system resolver configured (/etc/resolv.conf): {e}") from e
        resolver.cache = None  # ours is the cache
        resolver.timeout = min(2.0, self.timeout)  # per server attempt; `lifetime` bounds the whole lookup
        resolver.lifetime = self.timeout
        self._resolvers[resolvers] = resolver
        return resolver

    def clear(self) -> None:
        self._cache.clear()
        self._rotation.clear()


def _negative_ttl(error: dns.resolver.NXDOMAIN, qname: dns.name.Name) -> float:
    try:
        response = error.response(qname)
        return float(response.resolve_chaining().minimum_ttl)
    except Exception:  # no response kept, or an odd one: do not cache beyond minTTL
        return 0.0


def _canonical_ptr(name: str) -> str:
    try:
        return canonical_host(name)
    except InvalidHostname:
        return ""


def _no_address(name: str, family: str, nxdomain: bool) -> str:
    if nxdomain:
        return f"{name} does not exist (NXDOMAIN)"
    wanted = {"V4Only": "A", "V6Only": "AAAA"}.get(family, "A or AAAA")
    return f"no address of the allowed family for {name} (lookupFamily {family}: no {wanted} record)"
