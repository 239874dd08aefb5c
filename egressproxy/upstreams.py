"""Upstream candidates (DESIGN.md section 6, seam 1): where a decided request or connection may be sent.

A decision names its destination as an ordered tuple of `Upstream` values rather than one backend: the
requested destination (dynamic forwarding), a Static Backend's host, a Kubernetes Service, the providers
of an AI Backend's priority groups, or those of the Backends an AIBackend's `groups` name (`via` the AIBackend). Failover walks the tuple in order, `explain` prints it, a region
allow-list filters it, and the dial guard lets a connection open exactly the candidates a decision wrote
into its record (`ConnectionRecord.upstreams`), with the trust and DNS settings each one carries.

Weighted choice within a priority group takes an injectable random source, so tests and `explain` are
deterministic and the data plane is not.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from egressproxy.snapshot import AIProvider, Backend, StaticHost

if TYPE_CHECKING:
    from egressproxy.regions import RegionCheck

__all__ = ["RandomSource", "Upstream", "order_candidates"]


class RandomSource(Protocol):
    """What weighted ordering needs from a random generator (`random.Random` satisfies it)."""

    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Upstream:
    """One place a request may be sent, with everything the dialer needs to reach it safely."""

    host: str  # canonical name or IP literal to dial (the destination check resolves and checks it)
    port: int
    scheme: str = "https"  # https | http: whether the gateway speaks TLS to it
    sni: str | None = None  # TLS server name; None for plain HTTP or an IP literal
    backend: Backend | None = None  # the configured Backend; None = the requested destination (dynamic)
    trusted: bool = False  # a configured backend named this address (Static, Service, hostOverride, parent)
    parent: StaticHost | None = None  # reached through this parent proxy (DESIGN.md 4.1 parent mode)
    group: int = 0  # AI priority group, 0 = highest priority
    weight: int = 1
    provider: AIProvider | None = None  # for AI Backends: the provider this candidate is
    # An AIBackend whose `groups` named `backend`: the Backend the route chose, where its policies attach
    via: Backend | None = None
    # The RegionAllowListPolicy check this candidate passed when the request was decided (None: no policy was
    # consulted; the dialer then applies the gateway's). A `pending` one is decided by GeoIP at dial time.
    region_check: RegionCheck | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, int]:
        """The (host, port) the dial guard and the destination check look it up by."""
        return (self.host, self.port)

    @property
    def policy_backend(self) -> Backend | None:
        """The Backend policies (rate limits, TrafficPolicy, region allow-lists) attach to: the AIBackend the
        route names when this candidate is one of its groups' Backends, else the candidate's own."""
        return self.via if self.via is not None else self.backend

    @property
    def backend_name(self) -> str | None:
        """`namespace/name` of the Backend, as metrics, captures and explain show it."""
        if self.backend is None:
            return None
        return f"{self.backend.ref.namespace}/{self.backend.ref.name}"

    def to_dump(self) -> dict[str, object]:
        """The `explain --json` shape of DESIGN.md 4.2 (`request.upstreams[]`), plus the provider's name."""
        out: dict[str, object] = {
            "backend": self.backend_name,
            "host": self.host,
            "port": self.port,
            "scheme": self.scheme,
            "group": self.group,
        }
        if self.provider is not None:
            out["provider"] = self.provider.name
        if self.via is not None:
            out["via"] = self.via.name
        if self.parent is not None:
            out["parent"] = f"{self.parent.host}:{self.parent.port}"
        return out


def order_candidates(candidates: Iterable[Upstream], rng: RandomSource | None = None) -> tuple[Upstream, ...]:
    """Candidates in try order: priority groups ascending; within a group, a weighted random order.

    The order within a group is a weighted shuffle (Efraimidis-Spirakis: each candidate draws
    u ** (1 / weight) and the largest draw goes first), so the first candidate is chosen with probability
    weight / sum(weights) and the rest follow as fallbacks. Weight 0 candidates are never tried.
    """
    rng = rng if rng is not None else _RNG
    groups: dict[int, list[Upstream]] = {}
    for candidate in candidates:
        if candidate.weight > 0:
            groups.setdefault(candidate.group, []).append(candidate)
    ordered: list[Upstream] = []
    for group in sorted(groups):
        ordered.extend(_weighted_order(groups[group], rng))
    return tuple(ordered)


def _weighted_order(members: Sequence[Upstream], rng: RandomSource) -> list[Upstream]:
    if len(members) == 1:
        return list(members)
    keyed = [(_draw(rng) ** (1.0 / m.weight), i, m) for i, m in enumerate(members)]
    keyed.sort(key=lambda item: (-item[0], item[1]))
    return [m for _, _, m in keyed]


def _draw(rng: RandomSource) -> float:
    value = rng.random()
    return value if value > 0.0 else 1e-12  # 0 ** x is 0 for every weight: keep the weights meaningful


_RNG = random.Random()
