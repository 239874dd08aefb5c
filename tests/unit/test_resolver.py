"""The resolver against a real (local) DNS server: lookup families, TTL clamps, negative answers, PTR checks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from egressproxy.metrics import GatewayMetrics
from egressproxy.resolver import DnsSettings, ResolutionError, Resolver, order_by_family, parse_resolver, ptr_matches
from tests.support.dnsserver import DnsServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[DnsServer]:
    with DnsServer("127.0.0.1", ttl=30) as s:
        s.add("both.test", "A", ["127.0.0.2", "127.0.0.3"])
        s.add("both.test", "AAAA", "::1")
        s.add("v4.test", "A", "127.0.0.4")
        s.add("v6.test", "AAAA", "::1")
        yield s


def settings(server: DnsServer, **kw: object) -> DnsSettings:
    return DnsSettings(resolvers=(("127.0.0.1", server.port),), **kw)  # type: ignore[arg-type]


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


FAMILIES = [
    # family, name, addresses, A queries, AAAA queries
    ("V4Preferred", "both.test", ("127.0.0.2", "127.0.0.3"), 1, 0),
    ("V4Preferred", "v6.test", ("::1",), 1, 1),
    ("V4Only", "both.test", ("127.0.0.2", "127.0.0.3"), 1, 0),
    ("V6Only", "both.test", ("::1",), 0, 1),
    ("Auto", "both.test", ("::1",), 0, 1),
    ("Auto", "v4.test", ("127.0.0.4",), 1, 1),
    ("All", "both.test", ("127.0.0.2", "127.0.0.3", "::1"), 1, 1),
]


@pytest.mark.parametrize("family,name,addresses,a,aaaa", FAMILIES)
def test_lookup_families(server: DnsServer, family: str, name: str, addresses: tuple[str, ...], a: int, aaaa: int) -> None:
    got = run(Resolver(timeout=2).resolve(name, family, settings(server)))
    assert sorted(got) == sorted(addresses)
    assert (server.count(name, "A"), server.count(name, "AAAA")) == (a, aaaa)


@pytest.mark.parametrize("family,name", [("V4Only", "v6.test"), ("V6Only", "v4.test")])
def test_no_address_of_the_allowed_family(server: DnsServer, family: str, name: str) -> None:
    with pytest.raises(ResolutionError, match="no address of the allowed family"):
        run(Resolver(timeout=2).resolve(name, family, settings(server)))


def test_nxdomain_asks_no_second_family(server: DnsServer) -> None:
    with pytest.raises(ResolutionError, match="NXDOMAIN"):
        run(Resolver(timeout=2).resolve("missing.test", "V4Preferred", settings(server)))
    assert server.count("missing.test", "A") == 1 and server.count("missing.test", "AAAA") == 0


def test_all_rotates_the_union() -> None:
    with DnsServer("127.0.0.1") as server:
        server.add("lb.test", "A", ["127.0.0.2", "127.0.0.3"])
        server.add("lb.test", "AAAA", "::1")

        async def three() -> list[tuple[str, ...]]:
            r = Resolver(timeout=2)
            return [await r.resolve("lb.test", "All", settings(server)) for _ in range(3)]

        answers = run(three())
    assert sorted(answers[0]) == ["127.0.0.2", "127.0.0.3", "::1"]
    assert len({answer[0] for answer in answers}) == 3  # each lookup starts at another address
    assert all(a[1:] + a[:1] == b for a, b in zip(answers, answers[1:]))


def test_ttl_is_respected_and_clamped(server: DnsServer) -> None:
    clock = Clock()
    metrics = GatewayMetrics()
    r = Resolver(metrics, timeout=2, clock=clock)

    async def ask(s: DnsSettings) -> None:
        await r.resolve("v4.test", "V4Only", s)

    plain = settings(server)
    run(ask(plain))
    clock.now += 29
    run(ask(plain))
    assert server.count("v4.test", "A") == 1  # TTL 30 s: still cached
    clock.now += 2
    run(ask(plain))
    assert server.count("v4.test", "A") == 2  # expired

    capped = settings(server, max_ttl=5.0)
    clock.now += 6
    run(ask(capped))  # 6 s after the last fetch: maxTTL 5 s says stale
    assert server.count("v4.test", "A") == 3
    clock.now += 4
    run(ask(capped))
    assert server.count("v4.test", "A") == 3
    hits = metrics.dns_cache_hits._value.get()  # type: ignore[attr-defined]
    assert hits == 2


def test_min_ttl_holds_a_zero_ttl_answer_and_min_ttl_zero_asks_every_time() -> None:
    clock = Clock()
    with DnsServer("127.0.0.1", ttl=0) as server:
        server.add("zero.test", "A", "127.0.0.9")
        r = Resolver(timeout=2, clock=clock)
        zero = settings(server, min_ttl=0.0)
        for _ in range(3):
            run(r.resolve("zero.test", "V4Only", zero))
        assert server.count("zero.test", "A") == 3
        held = settings(server, min_ttl=10.0)  # the entry just fetched (TTL 0) now lives 10 s
        run(r.resolve("zero.test", "V4Only", held))
        clock.now += 9
        run(r.resolve("zero.test", "V4Only", held))
        assert server.count("zero.test", "A") == 3
        clock.now += 2
        run(r.resolve("zero.test", "V4Only", held))
        assert server.count("zero.test", "A") == 4


def test_negative_answers_are_cached_for_the_soa_ttl() -> None:
    clock = Clock()
    with DnsServer("127.0.0.1", negative_ttl=60) as server:
        r = Resolver(timeout=2, clock=clock)
        for _ in range(2):
            with pytest.raises(ResolutionError):
                run(r.resolve("gone.test", "V4Only", settings(server)))
        assert server.count("gone.test", "A") == 1
        clock.now += 61
        with pytest.raises(ResolutionError):
            run(r.resolve("gone.test", "V4Only", settings(server)))
        assert server.count("gone.test", "A") == 2


def test_concurrent_lookups_share_one_query() -> None:
    with DnsServer("127.0.0.1", ttl=0) as server:
        server.add("shared.test", "A", "127.0.0.5")

        async def many() -> list[tuple[str, ...]]:
            r = Resolver(timeout=2)
            return await asyncio.gather(*(r.resolve("shared.test", "V4Only", settings(server)) for _ in range(5)))

        assert run(many()) == [("127.0.0.5",)] * 5
        assert server.count("shared.test", "A") == 1


def test_timeout_is_a_resolution_error_and_counted() -> None:
    metrics = GatewayMetrics()
    with DnsServer("127.0.0.1") as server:
        server.drop.add("blackhole.test")
        with pytest.raises(ResolutionError, match="no answer within"):
            run(Resolver(metrics, timeout=0.5).resolve("blackhole.test", "V4Only", settings(server)))
    assert 'egress_dns_lookups_total{result="timeout"} 1.0' in metrics.render().decode()


def test_reverse_lookup_matches_host_or_suffix(server: DnsServer) -> None:
    server.add_ptr("127.0.0.4", "v4.test")
    server.add_ptr("127.0.0.2", "edge-7.cdn.example.net")
    r = Resolver(timeout=2)
    assert run(r.reverse_matches("127.0.0.4", "v4.test", settings(server))) == (True, ("v4.test",))
    assert run(r.reverse_matches("127.0.0.2", "both.test", settings(server)))[0] is False
    with_suffix = settings(server, reverse_suffixes=("cdn.example.net",))
    assert run(r.reverse_matches("127.0.0.2", "both.test", with_suffix))[0] is True
    assert run(r.reverse_matches("127.0.0.3", "both.test", with_suffix)) == (False, ())  # no PTR at all


def test_ptr_matching_is_label_aligned() -> None:
    assert ptr_matches(["a.example.com"], "a.example.com", [])
    assert ptr_matches(["x.example.com"], "other", ["example.com"])
    assert ptr_matches(["example.com"], "other", ["example.com"])
    assert not ptr_matches(["evilexample.com"], "other", ["example.com"])
    assert not ptr_matches([], "a", ["a"])


def test_settings_from_a_dns_policy_spec() -> None:
    spec = {
        "resolvers": ["10.0.0.10:53", "[fd00::10]:5353"],
        "minTTL": 0.0,
        "maxTTL": 60.0,
        "reverseLookup": {"enforce": True, "allowedSuffixes": [".1E100.net."]},
    }
    s = DnsSettings.from_spec(spec, "DNSPolicy/default/d")
    assert s.resolvers == (("10.0.0.10", 53), ("fd00::10", 5353))
    assert (s.min_ttl, s.max_ttl, s.reverse_enforce, s.reverse_suffixes) == (0.0, 60.0, True, ("1e100.net",))
    assert s.clamp(0) == 0 and s.clamp(600) == 60
    assert DnsSettings().clamp(600) == 600
    assert parse_resolver("[::1]:53") == ("::1", 53)


def test_order_by_family_for_configured_addresses() -> None:
    both = ["127.0.0.1", "::1"]
    assert order_by_family(both, "V4Preferred") == ("127.0.0.1",)
    assert order_by_family(["::1"], "V4Preferred") == ("::1",)
    assert order_by_family(both, "V4Only") == ("127.0.0.1",)
    assert order_by_family(both, "V6Only") == ("::1",)
    assert order_by_family(both, "Auto") == ("::1",)
    assert order_by_family(both, "All") == ("127.0.0.1", "::1")
    assert order_by_family(["::1"], "V4Only") == ()
