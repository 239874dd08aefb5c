"""Request heads mitmproxy parses but an egress gateway must not forward (pure; docs/reliability.md, Hostile input).

mitmproxy's HTTP/1 reader already refuses invalid header names, conflicting or malformed Content-Length and
Transfer-Encoding, and request lines it cannot split. It lets through, and forwards unchanged:

- any `HTTP/d.d` version on an HTTP/1 connection (`HTTP/0.9`, `HTTP/2.0`, `HTTP/9.9`);
- obs-fold continuation lines, joined into the value as `\\r\\n ` and sent on folded (RFC 9112 5.2: a proxy
  must reject them or replace them with a space);
- NUL and bare CR inside a value (RFC 9110 5.5: reject or replace);
- an HTTP/1.1 request with no Host header, or with several (RFC 9112 3.2: answer 400).

The next hop may read such a head differently from us (a folded line is a header of its own to a lenient
origin; a CR ends a line; a missing Host picks the origin's default virtual host), which is how requests are
smuggled past a decision. Each one is refused with 400 before any decision or dial.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["head_lines_problem", "head_problem", "header_line_problem"]

_HTTP1_VERSIONS = frozenset({"HTTP/1.0", "HTTP/1.1"})
_FORBIDDEN_IN_VALUE = re.compile(rb"[\x00\r\n]")
# RFC 9110 5.5: a field value is VCHAR, obs-text, SP and HTAB; every other control character is refused.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Anything `header_line_problem` could refuse, over a whole head joined by LF (a line holds no LF): a control
# character anywhere, or a line that starts with SP or HTAB. A superset (it also looks at the request line and at
# names), so a head without either has no problem, and a head with one is checked line by line. A plain character
# class (not an alternation) keeps the regex scan fast; the folds are two substring searches.
_SUSPECT_BYTE = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")


def header_line_problem(line: bytes) -> str | None:
    """Why one raw HTTP/1 header line (terminator removed) must be refused, or None.

    Checked before mitmproxy parses the head, because its parser strips every kind of whitespace around a value
    (`Transfer-Encoding: chunked\\x0b` becomes `chunked`, where another hop sees an unknown coding) and joins
    obs-fold lines. The message names the header, never its value (which may be a credential).
    """
    if line[:1] in (b" ", b"\t"):
        return "folded header line (obs-fold) refused"
    name, sep, value = line.partition(b":")
    if not sep:
        return None  # mitmproxy refuses a line without a colon itself
    shown = name[:64].decode("latin-1")
    if _CONTROL.search(value):
        return f"header {shown!r} holds a control character"
    return None


def head_lines_problem(lines: Sequence[bytes]) -> str | None:
    """`header_line_problem` of the first refused header line (the request line, `lines[0]`, is not checked).

    One regex scan over the whole head answers the common case (no suspect byte); only a head holding one is
    walked line by line, so the refusals and their messages are exactly `header_line_problem`'s.
    """
    head = b"\n".join(lines)
    if _SUSPECT_BYTE.search(head) is None and b"\n " not in head and b"\n\t" not in head:
        return None
    for line in lines[1:]:
        problem = header_line_problem(line)
        if problem is not None:
            return problem
    return None


def _expected_versions(alpn: bytes | None) -> frozenset[str]:
    """The versions a request on this client connection can carry (mitmproxy picks its HTTP layer by ALPN)."""
    if alpn == b"h2":
        return frozenset({"HTTP/2.0"})
    if alpn is not None and alpn.startswith(b"h3"):
        return frozenset({"HTTP/3"})
    return _HTTP1_VERSIONS


def head_problem(http_version: str, fields: Iterable[tuple[bytes, bytes]], alpn: bytes | None) -> str | None:
    """Why this request head must be refused, or None. `fields` are the raw (name, value) pairs as parsed."""
    if http_version not in _expected_versions(alpn):
        return f"unsupported HTTP version {http_version[:16]!r} on this connection"
    hosts = 0
    for name, value in fields:
        found = _FORBIDDEN_IN_VALUE.search(value)
        if found is not None:
            what = "a folded (obs-fold) line" if found.group(0) in b"\r\n" and b"\r\n" in value else "a control character"
            return f"header {name[:64].decode('latin-1')!r} holds {what}"
        if name.lower() == b"host":
            hosts += 1
    if http_version == "HTTP/1.1" and hosts != 1:
        return "an HTTP/1.1 request needs exactly one Host header" + ("" if hosts else " (none sent)")
    return None
