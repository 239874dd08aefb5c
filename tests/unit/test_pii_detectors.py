"""The builtin detectors and custom patterns (egressproxy/pii_detectors.py): Luhn, true and false positives of
each builtin, masks, and what a partial match at the end of a text holds open."""

from __future__ import annotations

import pytest
import regex

from egressproxy.pii_detectors import BUILTIN_NAMES, builtin, custom, luhn_valid


@pytest.mark.parametrize(
    "digits, valid",
    [("4111111111111111", True), ("4111111111111112", False), ("5555555555554444", True), ("378282246310005", True),
     ("046454286", True), ("046454287", False), ("0", True), ("79927398713", True), ("79927398710", False)],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


CASES = {
    "CreditCard": (
        ["4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "5555555555554444", "378282246310005"],
        ["4111111111111112", "4111 1111 1111 1112", "123456789012", "41111111111111111111111"],
    ),
    "Email": (
        ["jane@example.com", "jane.doe+tag@mail.example.co.uk", "a_b-c@x-y.io"],
        ["jane@localhost", "jane at example.com", "@example.com", "jane@.com"],
    ),
    "PhoneNumber": (
        ["(555) 123-4567", "555-123-4567", "555.123.4567", "+1 555 123 4567", "5551234567", "+44 20 7946 0958"],
        ["12345", "555-1234", "2024-01-15"],
    ),
    "Ssn": (
        ["123-45-6789", "123 45 6789"],
        ["123456789", "000-12-3456", "666-12-3456", "900-12-3456", "123-00-6789", "123-45-0000", "123-45 6789"],
    ),
    "CaSin": (
        ["046 454 286", "046-454-286", "046454286"],
        ["046 454 287", "046 454-286", "04645428"],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_builtin_finds_its_true_positives(name: str) -> None:
    detector = builtin(name)
    for value in CASES[name][0]:
        assert detector.first(f"x {value} y") == value, value
        assert detector.substitute(f"x {value} y") == f"x {detector.mask} y"


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_builtin_leaves_its_look_alikes(name: str) -> None:
    detector = builtin(name)
    for value in CASES[name][1]:
        assert detector.first(f"x {value} y") is None, value
        assert detector.substitute(f"x {value} y") == f"x {value} y"


def test_both_spellings_name_one_builtin_and_masks_hold_no_digit_or_at() -> None:
    for spelling, canonical in BUILTIN_NAMES.items():
        detector = builtin(spelling)
        assert detector.name == canonical
        assert not any(ch.isdigit() or ch == "@" for ch in detector.mask)


def test_a_card_inside_a_longer_digit_run_is_no_card() -> None:
    assert builtin("CreditCard").first("id 14111111111111111 end") is None


def test_custom_patterns_mask_with_their_name() -> None:
    assert custom(r"ACME-\d{6}", "project code").substitute("see ACME-123456.") == "see <PROJECT_CODE>."
    assert custom(r"secret\w+", None).substitute("a secretXYZ b") == "a <MASKED> b"
    with pytest.raises(regex.error):
        custom("(", "broken")


@pytest.mark.parametrize(
    "text, start",
    [
        ("card 4111 1111", 5),  # digits that may still become a card
        ("card 4111 1111 1111 1111", 5),  # a whole card that may still grow (19 digits)
        ("card 4111 1111 1111 1111 ok", None),  # closed by what follows
        ("hello there", None),
    ],
)
def test_open_from_holds_only_what_could_still_become_a_card(text: str, start: int | None) -> None:
    found = builtin("CreditCard").open_from(text)
    assert (found if found is not None and found < len(text) else None) == start


def test_open_from_for_an_email_under_way() -> None:
    assert builtin("Email").open_from("mail bob@exa") == 5
    assert builtin("Email").open_from("mail bob@example.org ") in (None, len("mail bob@example.org "))


def test_a_catastrophic_custom_pattern_times_out_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    import egressproxy.pii_detectors as module

    monkeypatch.setattr(module, "MATCH_TIMEOUT", 0.05)
    with pytest.raises(TimeoutError):
        custom(r"(a|aa)+$", "evil").first("a" * 40 + "b")
