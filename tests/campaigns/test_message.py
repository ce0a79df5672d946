"""MIME composition: the bytes read back exactly with Python's parser, 7-bit, CRLF, short lines, no injection."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Any

import pytest

from zgoda.campaigns.footer import FooterContext
from zgoda.campaigns.message import compose_message
from zgoda.campaigns.rendering import RenderedParts, compile_template
from zgoda.core.errors import InvalidInput

FOOTER = FooterContext(
    sender_name="Kawiarnia Zgoda", postal_address="ul. Prosta 1, Warszawa", purpose_label="Newsletter",
    source_label="Sklep", unsubscribe_url="https://zgoda.example/u/t", preferences_url="https://zgoda.example/p/t",
    language="pl",
)  # fmt: skip
LONG_WORDS = "x" * 300
PARTS = RenderedParts(
    subject="Jesienne nowości — zniżka 20% dla Ciebie, Łucja! Sprawdź, co przygotowaliśmy w tym tygodniu",
    html=f"<html><body><p>Zażółć gęślą jaźń =?utf-8?q?x?= {LONG_WORDS}</p>\n<p>.dot\nFrom here</p>\r\n</body></html>",
    text=f"Zażółć gęślą jaźń\n\n.dot line\nFrom here  \ntrailing tab\t\n{LONG_WORDS}\n",
    footer_attached=True,
)
DATE = datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=1)))


def compose(**changes: Any) -> bytes:
    arguments: dict[str, Any] = {
        "parts": PARTS,
        "from_address": "news@kawiarnia.example",
        "from_name": "Kawiarnia Żółta",
        "to_address": "lucja@example.com",
        "reply_to": "biuro@kawiarnia.example",
        "message_id": "<s42.w7@zgoda.example>",
        "return_path": "b+s42@bounce.zgoda.example",
        "list_unsubscribe_https": "https://zgoda.example/u/" + "t" * 120,
        "list_unsubscribe_mailto": "mailto:u+s42@zgoda.example",
        "list_id": "Nowości Kawiarni <news.w7.zgoda.example>",
        "feedback_id": "c9:w7:newsletter:zgoda",
        "ref": "s42",
        "extra_headers": {"X-Campaign": "Jesień 2026"},
        "date": DATE,
    }
    arguments.update(changes)
    return compose_message(**arguments)


def test_reads_back_exactly_with_the_default_policy() -> None:
    raw = compose()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["From"] == "Kawiarnia Żółta <news@kawiarnia.example>"
    assert message["From"].addresses[0].display_name == "Kawiarnia Żółta"
    assert message["To"] == "lucja@example.com"
    assert message["Reply-To"] == "biuro@kawiarnia.example"
    assert message["Subject"] == PARTS.subject
    assert message["Message-ID"] == "<s42.w7@zgoda.example>"
    assert message["Date"].datetime == DATE
    assert message["MIME-Version"] == "1.0"
    assert message["List-Unsubscribe"] == ("<https://zgoda.example/u/" + "t" * 120 + ">, <mailto:u+s42@zgoda.example>")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == "Nowości Kawiarni <news.w7.zgoda.example>"
    assert message["Feedback-ID"] == "c9:w7:newsletter:zgoda"
    assert message["X-Zgoda-Ref"] == "s42"
    assert message["X-Campaign"] == "Jesień 2026"
    assert message["Return-Path"] is None  # the envelope's business; the receiving server adds it
    assert message.get_content_type() == "multipart/alternative"
    plain, html = message.get_payload()
    assert plain.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert plain.get_content_charset() == "utf-8"
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert plain.get_content().replace("\r\n", "\n") == PARTS.text
    assert html.get_content().replace("\r\n", "\n") == PARTS.html.replace("\r\n", "\n")
    assert message.defects == [] and plain.defects == [] and html.defects == []


def test_lf_only_reading_gives_the_same_parts() -> None:
    message = email.message_from_bytes(compose().replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert message.get_body(("plain",)).get_content() == PARTS.text  # type: ignore[union-attr]
    assert message["Subject"] == PARTS.subject


def test_wire_format_is_seven_bit_crlf_with_short_lines() -> None:
    raw = compose()
    assert all(byte < 128 for byte in raw)
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    # only the unbreakable unsubscribe address is longer than RFC 5322's recommended 78
    assert [line for line in lines if len(line) > 78] == [
        b"List-Unsubscribe: <https://zgoda.example/u/" + b"t" * 120 + b">,"
    ]
    assert raw.endswith(b"--\r\n")
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert "Return-Path" not in head
    assert re.search(r"^List-Unsubscribe: <https://", head, re.M)  # https first (RFC 8058)
    assert "=?utf-8?" in head  # the non-ASCII display name, subject and list name are RFC 2047 words


def test_ascii_values_stay_readable() -> None:
    parts = RenderedParts(subject="Autumn news", html="<p>x</p>", text="x\n", footer_attached=True)
    head = compose(parts=parts, from_name="Cafe Zgoda", list_id="<news.zgoda.example>", extra_headers={}).split(
        b"\r\n\r\n"
    )[0]
    assert b"From: Cafe Zgoda <news@kawiarnia.example>" in head
    assert b"Subject: Autumn news" in head
    assert b"List-Id: <news.zgoda.example>" in head


def test_display_names_with_specials_are_quoted() -> None:
    message = email.message_from_bytes(compose(from_name='Cafe "Zgoda", Ltd.'), policy=email.policy.default)
    assert message["From"].addresses[0].display_name == 'Cafe "Zgoda", Ltd.'
    assert message["From"].addresses[0].addr_spec == "news@kawiarnia.example"


def test_subject_that_looks_encoded_survives() -> None:
    parts = RenderedParts(subject="Use =?utf-8?q?abc?= now", html="<p>x</p>", text="x", footer_attached=True)
    message = email.message_from_bytes(compose(parts=parts), policy=email.policy.default)
    assert message["Subject"] == "Use =?utf-8?q?abc?= now"


def test_message_id_is_the_one_given_with_or_without_brackets() -> None:
    for given in ("<a.b@zgoda.example>", "a.b@zgoda.example"):
        message = email.message_from_bytes(compose(message_id=given), policy=email.policy.default)
        assert message["Message-ID"] == "<a.b@zgoda.example>"


def test_the_same_inputs_give_the_same_bytes() -> None:
    assert compose() == compose()
    assert compose() != compose(message_id="<other@zgoda.example>")


def test_optional_headers_can_be_left_out() -> None:
    raw = compose(reply_to=None, list_unsubscribe_mailto=None, list_id=None, feedback_id=None, extra_headers=None)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Reply-To"] is None and message["List-Id"] is None and message["Feedback-ID"] is None
    assert message["List-Unsubscribe"] == "<https://zgoda.example/u/" + "t" * 120 + ">"


def test_idn_domains_are_punycoded() -> None:
    message = email.message_from_bytes(compose(to_address="jan@żółw.example"), policy=email.policy.default)
    assert message["To"] == "jan@xn--w-uga1v8h.example"


INJECTIONS = [
    ({"to_address": "a@b.example\r\nBcc: victim@example.com"}, "to_address"),
    ({"from_name": "Cafe\nBcc: victim@example.com"}, "from_name"),
    ({"reply_to": "a@b.example\rX: y"}, "reply_to"),
    ({"message_id": "<a@b.example>\r\nX: y"}, "message_id"),
    ({"list_unsubscribe_https": "https://z.example/u\r\nX: y"}, "list_unsubscribe_https"),
    ({"list_unsubscribe_https": "http://z.example/u"}, "list_unsubscribe_https"),
    ({"list_unsubscribe_https": "https://z.example/u>, <https://evil.example"}, "list_unsubscribe_https"),
    ({"list_unsubscribe_mailto": "mailto:a@b.example\nX: y"}, "list_unsubscribe_mailto"),
    ({"list_id": "x <a.b>\nX: y"}, "list_id"),
    ({"feedback_id": "a:b\r\n"}, "feedback_id"),
    ({"ref": "s1\nBcc: x@y.example"}, "ref"),
    ({"extra_headers": {"X-A": "b\r\nBcc: x@y.example"}}, "extra_headers.X-A"),
    ({"extra_headers": {"Bcc": "x@y.example"}}, "extra_headers"),
    ({"extra_headers": {"X-A\r\nBcc": "x"}}, "extra_headers"),
    ({"extra_headers": {"Return-Path": "<x@y.example>"}}, "extra_headers"),
    ({"parts": RenderedParts(subject="a\r\nBcc: x@y.example", html="", text="", footer_attached=True)}, "subject"),
    ({"return_path": "not an address"}, "return_path"),
    ({"to_address": "łucja@example.com"}, "to_address"),
    ({"date": datetime(2026, 1, 1)}, "date"),
    ({"parts": RenderedParts(subject="a", html="<p>x</p>", text="x")}, "html"),  # no footer
]


@pytest.mark.parametrize(("change", "field"), INJECTIONS)
def test_bad_values_are_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        compose(**change)
    assert caught.value.field == field


def test_a_header_that_cannot_fit_998_octets_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        compose(list_unsubscribe_https="https://z.example/" + "u" * 1000)
    assert caught.value.field == "List-Unsubscribe"


def test_same_content_as_the_standard_library_composition() -> None:
    reference = EmailMessage()
    reference["Subject"] = PARTS.subject
    reference.set_content(PARTS.text)
    reference.add_alternative(PARTS.html, subtype="html")
    ours = email.message_from_bytes(compose(), policy=email.policy.default)
    for kind in ("plain", "html"):
        mine = ours.get_body((kind,)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
        theirs = reference.get_body((kind,)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
        assert mine.rstrip("\n") == theirs.rstrip("\n")  # set_content adds a final newline; we keep parts as given


def test_a_rendered_campaign_composes_end_to_end() -> None:
    template = compile_template(
        subject="Cześć {{ contact.first_name }}", html="<p>Dzień dobry {{ contact.first_name }}</p>", text=None,
        allowed_fields={"email", "first_name"},
    )  # fmt: skip
    parts = template.render(contact={"first_name": "Łucja"}, workspace_name="K", campaign_name="C", footer=FOOTER)
    message = email.message_from_bytes(compose(parts=parts, date=None), policy=email.policy.default)
    assert message["Subject"] == "Cześć Łucja"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Dzień dobry Łucja" in text and "Wypisz się: https://zgoda.example/u/t" in text
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert html.index("Dzień dobry Łucja") < html.index("zgoda-footer")
    assert abs(message["Date"].datetime - datetime.now(UTC)) < timedelta(days=1)
