"""Upstream TLS sessions kept for resumption: a new connection to an origin the gateway already talked to resumes
its session (a TLS 1.3 ticket, a TLS 1.2 session ID or ticket) instead of paying for a full handshake.

Why the key is so wide: a resumed handshake carries no certificate, so none of the gateway's checks run on it
(trust anchors, hostname or subjectAltNames, SPKI pins, CRLs) and the client certificate is not sent again; it
rests entirely on the full handshake that created the session. A session is therefore offered only to a
connection that would have run exactly the same checks: same origin (host, port), same verified name (also the
SNI), same verification parameters (`UpstreamTlsParams`: trust, pins, SANs, CRLs, client certificate), same
protocol settings and same ALPN offer. A reload that changes a BackendTLSPolicy or the gateway trust changes the
parameters, hence the key, so sessions never cross trust settings or identities.

A session is stored only from a connection that passed every check and then received application data from the
origin (a TLS 1.3 origin that rejects our client certificate does so after the handshake, and never sends data).
Sessions older than `max_age` are not offered (an origin's new certificate is then checked within that time);
an origin that no longer accepts a session simply answers with a full handshake, which is checked as usual.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from OpenSSL import SSL

__all__ = ["TlsSessions", "DEFAULT_CAPACITY", "DEFAULT_MAX_AGE"]

DEFAULT_CAPACITY = 1024  # distinct (origin, name, parameters, settings, ALPN) keys remembered
DEFAULT_MAX_AGE = 3600.0  # seconds a session is offered after the handshake that created it


class TlsSessions:
    """A bounded LRU of the latest session per key, with the counts GET /stats shows."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        max_age: float = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.max_age = max_age
        self._clock = clock
        self._sessions: OrderedDict[Hashable, tuple[float, SSL.Session]] = OrderedDict()
        self.offered = 0
        self.resumed = 0
        self.full = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, key: Hashable) -> SSL.Session | None:
        """The session to offer for `key`, if one younger than `max_age` is kept."""
        entry = self._sessions.get(key)
        if entry is None:
            return None
        if self._clock() - entry[0] > self.max_age:
            del self._sessions[key]
            return None
        self._sessions.move_to_end(key)
        self.offered += 1
        return entry[1]

    def put(self, key: Hashable, session: SSL.Session) -> None:
        """Keep `session` (from a connection that passed every check under `key`) as the one to offer next."""
        self._sessions[key] = (self._clock(), session)
        self._sessions.move_to_end(key)
        while len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)

    def clear(self) -> None:
        self._sessions.clear()

    def note_handshake(self, resumed: bool) -> None:
        if resumed:
            self.resumed += 1
        else:
            self.full += 1

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._sessions), "offered": self.offered, "resumed": self.resumed, "full": self.full}
