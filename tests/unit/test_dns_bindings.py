"""IP -> name bindings from the DNS listener's answers, and how a transparent connection uses them."""

from __future__ import annotations

import time

from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_text
from egressproxy.decisions import Action, decide_connection, dns_name_allowed
from egressproxy.dns_bindings import DnsBindings
from egressproxy.matching import Carries
from tests.e2e.test_dns_listener import CONFIG


def _snapshot():
    loaded = load_text(CONFIG, "dns.yaml")
    assert loaded.ok, loaded.problems
    compiled = compile_config(loaded.resources)
    assert compiled.ok, compiled.problems
    return compiled.snapshot


def test_bindings_expire_after_ttl_plus_grace(monkeypatch):
    bindings = DnsBindings()
    bindings.bind("203.0.113.7", "db.example.test", ttl=30)
    assert bindings.name_for("203.0.113.7") == "db.example.test"
    later = time.monotonic() + 30 + 61
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert bindings.name_for("203.0.113.7") is None


def test_bindings_are_bounded():
    bindings = DnsBindings(cap=2)
    for i in range(3):
        bindings.bind(f"203.0.113.{i}", f"n{i}.example.test", ttl=30)
    assert len(bindings) == 2 and bindings.name_for("203.0.113.0") is None


def test_a_transparent_tcp_connection_to_an_answered_address_matches_by_its_hostname():
    snapshot = _snapshot()
    bound = decide_connection(snapshot, Carries.TCP, 5432, bound_host="db.example.test", ip="203.0.113.7")
    assert bound.action is Action.TCP and bound.route is not None and bound.route.ref.name == "db"
    unbound = decide_connection(snapshot, Carries.TCP, 5432, ip="203.0.113.7")
    assert unbound.action is Action.CLOSE and unbound.verdict.reason == "no-route"


def test_dns_names_allowed_follow_the_routes():
    snapshot = _snapshot()
    assert dns_name_allowed(snapshot, "allowed.example.test").allowed
    assert dns_name_allowed(snapshot, "db.example.test").allowed
    assert not dns_name_allowed(snapshot, "unrouted.example.test").allowed
