"""Go duration strings, parsed as time.ParseDuration does."""

from __future__ import annotations

import pytest

from egressproxy.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("300ms", 0.3),
        ("0", 0.0),
        ("+0", 0.0),
        ("-0", 0.0),
        ("0s", 0.0),
        ("5m", 300.0),
        ("2h45m", 9900.0),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("1h1m1s1ms1us1ns", 3661.001001001),
        ("10µs", 1e-5),
        ("10μs", 1e-5),
        ("-1.5s", -1.5),
        ("+2m", 120.0),
        ("1s1s", 2.0),
    ],
)
def test_valid_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid duration ''"),
        ("-", "invalid duration '-'"),
        ("s", "invalid duration 's'"),
        (".s", "invalid duration '.s'"),
        ("1", "missing unit in duration '1' (use ns, us, ms, s, m or h)"),
        ("1.5", "missing unit in duration '1.5' (use ns, us, ms, s, m or h)"),
        ("5m3", "missing unit in duration '5m3' (use ns, us, ms, s, m or h)"),
        ("1d", "unknown unit 'd' in duration '1d' (use ns, us, ms, s, m or h)"),
        ("10sec", "unknown unit 'sec' in duration '10sec' (use ns, us, ms, s, m or h)"),
        ("1e3s", "unknown unit 'e' in duration '1e3s' (use ns, us, ms, s, m or h)"),
        ("1h 1m", "unknown unit 'h ' in duration '1h 1m' (use ns, us, ms, s, m or h)"),
        (" 1s", "invalid duration ' 1s'"),
        ("1s ", "invalid duration '1s '"),
        ("--1s", "invalid duration '--1s'"),
        ("3000000h", "invalid duration '3000000h': longer than Go's maximum of about 2562047h"),
    ],
)
def test_invalid_durations(text: str, message: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    assert str(caught.value) == message


def test_a_non_string_is_an_error() -> None:
    with pytest.raises(DurationError):
        parse_duration(30)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.3, "300ms"), (1, "1s"), (90, "1m30s"), (300, "5m0s"), (5400, "1h30m0s"), (3661.5, "1h1m1.5s"), (-30, "-30s")],
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)
