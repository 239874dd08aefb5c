"""Request heads refused before any decision (egressproxy/request_head.py)."""

from __future__ import annotations

import random

import pytest

from egressproxy.request_head import head_lines_problem, head_problem, header_line_problem

HOST = [(b"Host", b"a.example")]


@pytest.mark.parametrize(
    ("version", "alpn"),
    [("HTTP/1.1", None), ("HTTP/1.0", None), ("HTTP/1.1", b"http/1.1"), ("HTTP/2.0", b"h2"), ("HTTP/3", b"h3")],
)
def test_each_connection_accepts_its_own_versions(version: str, alpn: bytes | None) -> None:
    assert head_problem(version, HOST, alpn) is None


@pytest.mark.parametrize(
    ("version", "alpn"),
    [("HTTP/0.9", None), ("HTTP/2.0", None), ("HTTP/9.9", None), ("HTTP/1.1000", None), ("HTTP/1.1", b"h2")],
)
def test_a_version_the_connection_cannot_carry_is_refused(version: str, alpn: bytes | None) -> None:
    assert "unsupported HTTP version" in (head_problem(version, HOST, alpn) or "")


@pytest.mark.parametrize(
    ("value", "what"),
    [(b"a\r\n b", "obs-fold"), (b"a\x00b", "control character"), (b"a\rb", "control character")],
)
def test_folded_values_and_control_characters_are_refused_by_header_name_only(value: bytes, what: str) -> None:
    problem = head_problem("HTTP/1.1", [*HOST, (b"Authorization", b"Bearer sk-" + value)], None)
    assert problem is not None and what in problem and "'Authorization'" in problem
    assert "sk-" not in problem


@pytest.mark.parametrize("hosts", [[], [(b"Host", b"a.example"), (b"host", b"b.example")]])
def test_http11_needs_exactly_one_host(hosts: list[tuple[bytes, bytes]]) -> None:
    assert "exactly one Host" in (head_problem("HTTP/1.1", hosts, None) or "")


def test_http10_and_http2_may_omit_host() -> None:
    assert head_problem("HTTP/1.0", [], None) is None
    assert head_problem("HTTP/2.0", [], b"h2") is None


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b" continued", "obs-fold"),
        (b"\tcontinued", "obs-fold"),
        (b"Transfer-Encoding: chunked\x0b", "control character"),
        (b"Cookie: session=s3cret\x00", "control character"),
        (b"X-A: \x1b[31m", "control character"),
        (b"X-A: a\x7f", "control character"),
    ],
)
def test_raw_header_lines_with_folds_or_control_characters_are_refused(line: bytes, problem: str) -> None:
    found = header_line_problem(line)
    assert found is not None and problem in found
    assert "s3cret" not in found and "chunked" not in found


@pytest.mark.parametrize("line", [b"X-A: a\tb", b"X-A:", b"X-A: caf\xc3\xa9", b"no colon"])
def test_ordinary_lines_pass(line: bytes) -> None:
    assert header_line_problem(line) is None


def _line_by_line(lines: list[bytes]) -> str | None:
    """The reference: every header line checked on its own (what the boundary did before the one-pass scan)."""
    return next((p for p in map(header_line_problem, lines[1:]) if p is not None), None)


def test_one_pass_scan_refuses_exactly_what_the_line_by_line_check_refuses() -> None:
    """Random heads built from bytes that matter (SP, HTAB, colon, every control byte, obs-text) plus ordinary
    ones: the one-pass scan gives the line-by-line answer, message included, for every one of them."""
    rng = random.Random(16)
    alphabet = [bytes([b]) for b in (*range(0x00, 0x0A), *range(0x0B, 0x20), 0x7F, 0x80, 0xFF)]
    alphabet += [b" ", b"\t", b":", b"a", b"Host", b"X-A: v", b"-"]
    refused = 0
    for _ in range(3000):
        lines = [b"GET http://a.example/ HTTP/1.1"]
        lines += [b"".join(rng.choices(alphabet, k=rng.randint(0, 8))) for _ in range(rng.randint(0, 5))]
        expected = _line_by_line(lines)
        refused += expected is not None
        assert head_lines_problem(lines) == expected, lines
    assert 100 < refused < 2900  # both answers were exercised


@pytest.mark.parametrize(
    "lines",
    [
        [b"GET\x00 / HTTP/1.1", b"Host: a"],  # the request line is mitmproxy's to judge, as before
        [b" GET / HTTP/1.1", b"Host: a"],
        [b"GET / HTTP/1.1", b"X\x01A: v", b"Host: a"],  # a bad name: mitmproxy refuses it itself
        [b"GET / HTTP/1.1", b"Host: a", b"X-A: caf\xc3\xa9\tb"],
    ],
)
def test_one_pass_scan_passes_what_the_line_check_passes(lines: list[bytes]) -> None:
    assert head_lines_problem(lines) is None


@pytest.mark.parametrize("bad", [b" folded", b"\tfolded", b"X-A: a\x0bb", b"X-A: a\rb", b"X-A: a\x7f"])
def test_one_pass_scan_refuses_a_bad_line_anywhere_in_the_head(bad: bytes) -> None:
    for at in (1, 2, 3):
        lines = [b"GET / HTTP/1.1", b"Host: a", b"X-B: b"]
        lines.insert(at, bad)
        assert head_lines_problem(lines) == header_line_problem(bad)
