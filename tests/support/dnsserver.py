"""A tiny authoritative DNS server on UDP for tests: A, AAAA and PTR answers from a dict, counting queries.

    with DnsServer("127.0.0.53") as dns:
        dns.add("api.test", "A", "127.0.0.2", ttl=0)
        dns.add("api.test", "AAAA", "::1")
        dns.add_ptr("127.0.0.2", "api.test")
        dns.answer("rebind.test", "A", lambda n: ["127.0.0.2"] if n % 2 else ["127.0.0.1"])  # n = 1, 2, ...
        ... dns.address -> "127.0.0.53:PORT" (for a DNSPolicy `resolvers` entry)
        ... dns.count("api.test", "A") -> how many A queries arrived

A name with records of other types only gets NOERROR with no answer (NODATA); an unknown name gets NXDOMAIN;
both carry an SOA whose TTL and minimum are `negative_ttl`. A name in `drop` is never answered (timeouts); a name
in `servfail` gets SERVFAIL (the server's own failure).
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.reversename

Answer = list[str] | Callable[[int], list[str]]


def _key(name: str) -> str:
    return name.lower().rstrip(".")


class DnsServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, ttl: int = 60, negative_ttl: int = 0) -> None:
        self.default_ttl = ttl
        self.negative_ttl = negative_ttl
        self.records: dict[tuple[str, str], tuple[Answer, int]] = {}
        self.drop: set[str] = set()
        self.servfail: set[str] = set()
        self.queries: Counter[tuple[str, str]] = Counter()
        self.log: list[tuple[str, str, list[str]]] = []  # (name, type, what was answered), in order
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.host = host
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"dns {host}:{self.port}", daemon=True)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    # -------------------------------------------------------------------------------------------- records

    def add(self, name: str, rdtype: str, values: str | Iterable[str], ttl: int | None = None) -> None:
        vals = [values] if isinstance(values, str) else list(values)
        with self._lock:
            self.records[(_key(name), rdtype.upper())] = (vals, self.default_ttl if ttl is None else ttl)

    def answer(self, name: str, rdtype: str, fn: Callable[[int], list[str]], ttl: int | None = None) -> None:
        """Answer with `fn(n)`, n being the 1-based count of queries for (name, type) so far."""
        with self._lock:
            self.records[(_key(name), rdtype.upper())] = (fn, self.default_ttl if ttl is None else ttl)

    def add_ptr(self, address: str, target: str, ttl: int | None = None) -> None:
        self.add(dns.reversename.from_address(address).to_text(), "PTR", target.rstrip(".") + ".", ttl)

    def count(self, name: str, rdtype: str | None = None) -> int:
        with self._lock:
            if rdtype is None:
                return sum(n for (q, _), n in self.queries.items() if q == _key(name))
            return self.queries[(_key(name), rdtype.upper())]

    def ptr_count(self, address: str) -> int:
        return self.count(dns.reversename.from_address(address).to_text(), "PTR")

    def reset(self) -> None:
        with self._lock:
            self.queries.clear()
            self.log.clear()

    # -------------------------------------------------------------------------------------------- serving

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                reply = self._reply(wire)
            except Exception:  # a malformed query: no answer
                continue
            if reply is not None:
                try:
                    self.sock.sendto(reply, peer)
                except OSError:
                    pass

    def _reply(self, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = _key(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self.queries[(name, rdtype)] += 1
            n = self.queries[(name, rdtype)]
            if name in self.drop:
                self.log.append((name, rdtype, ["<dropped>"]))
                return None
            servfail = name in self.servfail
            entry = self.records.get((name, rdtype))
            known = any(q == name for q, _ in self.records)
        response = dns.message.make_response(query)
        if servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        response.flags |= dns.flags.AA
        if entry is not None:
            answer, ttl = entry
            values = answer(n) if callable(answer) else answer
        else:
            values, ttl = [], 0
        with self._lock:
            self.log.append((name, rdtype, list(values)))
        if values:
            response.answer.append(dns.rrset.from_text_list(question.name, ttl, "IN", rdtype, values))
        else:
            if not known:
                response.set_rcode(dns.rcode.NXDOMAIN)
            soa = f"ns.{name}. hostmaster.{name}. 1 3600 600 86400 {self.negative_ttl}"
            zone = dns.name.from_text(name)
            response.authority.append(dns.rrset.from_text(zone, self.negative_ttl, "IN", "SOA", soa))
        return response.to_wire()

    def __enter__(self) -> "DnsServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
