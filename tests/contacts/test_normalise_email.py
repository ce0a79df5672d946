"""``normalise_email`` takes a shortcut for ASCII addresses (the domain checked once per domain): it must
give exactly what ``email_validator`` gives, the same address or the same error, for any input."""

from __future__ import annotations

import random

import pytest
from email_validator import EmailNotValidError, validate_email

from zgoda.contacts import service as contacts
from zgoda.core.errors import InvalidInput


def _full_path(value: str) -> str:
    """What normalise_email did before the shortcut: the address, or the error message it raised."""
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as error:
        return f"'{value}' is not a valid email address: {error}"


def _normalised(value: str) -> str:
    try:
        return contacts.normalise_email(value)
    except InvalidInput as error:
        return error.detail


EDGE_CASES = [
    "jan.kowalski@gmail.com",
    "Jan.Kowalski@Gmail.COM",
    "  a@wp.pl  ",
    "o'reilly@example.com",
    "a+tag@sub.Example.pl",
    "!#$%&'*+-/=?^_`{|}~@example.com",
    "POSTMASTER@example.com",
    "x@xn--mnchen-3ya.de",
    "x@XN--MNCHEN-3YA.DE",
    "x@xn--zz.de",
    "x@xn--.de",
    "a..b@example.com",
    ".a@example.com",
    "a.@example.com",
    "a@example..com",
    "a@.example.com",
    "a@example.com.",
    "a@-example.com",
    "a@example-.com",
    "a@exa_mple.com",
    "a@example.c",
    "a@example.123",
    "a@123.123.123.123",
    "a@localhost",
    "a@wp",
    "a@example.test",
    "a@example.invalid",
    "a@example.local",
    "a@example.onion",
    "a@in-addr.arpa",
    "a@" + "b" * 63 + ".pl",
    "a@" + "b" * 64 + ".pl",
    "a@" + ".".join(["abcdefghi"] * 25) + ".pl",
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "a" * 241 + "@example.com",
    "a" * 242 + "@example.com",
    "a" * 243 + "@example.com",
    "a" * 240 + "@xn--mnchen-3ya.de",
    "a" * 250 + "@b.pl",
    "a@b@c.pl",
    "@example.com",
    "a@",
    "a",
    "",
    '"a b"@example.com',
    "Jan <jan@example.com>",
    "żaneta@example.com",
    "a@żabka.pl",
    "a@example.com\n",
    "a@exam\u0301ple.com",
]


@pytest.mark.parametrize("value", EDGE_CASES)
def test_edge_cases_match_email_validator(value: str) -> None:
    assert _normalised(value) == _full_path(value)
    assert _normalised(value) == _full_path(value)  # again, with the domain remembered


def test_random_addresses_match_email_validator() -> None:
    rng = random.Random(7)
    parts = ["a", "Z", "9", ".", "-", "_", "+", "'", "@", "..", "xn--", "pl", "com", "test", "ą", " ", '"', "<"]
    domains = ["wp.pl", "Gmail.com", "a-b.pl", "-x.pl", "x.p", "x.123", "xn--mnchen-3ya.de", "local", "b..pl", "o2.pl"]
    for _ in range(3000):
        local = "".join(rng.choice(parts) for _ in range(rng.randint(0, 6)))
        value = f"{local}@{rng.choice(domains)}" if rng.random() < 0.7 else local
        assert _normalised(value) == _full_path(value), value


def test_the_shortcut_is_taken_for_plain_addresses() -> None:
    contacts._DOMAINS.clear()
    assert contacts.normalise_email("Anna.Nowak@Onet.PL") == "anna.nowak@onet.pl"
    assert contacts._DOMAINS == {"Onet.PL": ("onet.pl", "onet.pl")}
    with pytest.raises(InvalidInput, match="It should have a period"):  # the full path's message
        contacts.normalise_email("jan@wp")
    assert contacts._DOMAINS["wp"] == ()
