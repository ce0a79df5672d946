"""parse_message gives a result for any input at all, and reads broken but real-looking mail correctly.

"Never raises" alone would be trivially true (parse_message has a last-resort guard), so these tests also
assert that the guard was not needed: no report comes back with ``format == "unreadable"``.
"""

from __future__ import annotations

import base64
import json
import os
import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zgoda.feedback.kinds import BounceClass, BounceReason, FeedbackKind
from zgoda.feedback.parsing import MAX_PARSE_BYTES, FeedbackReport, parse_message

SAMPLES = Path(__file__).parent / "samples"
SAMPLE_BYTES = [path.read_bytes() for path in sorted(SAMPLES.rglob("*.eml"))]

EXIM = (
    b"From: Mail Delivery System <Mailer-Daemon@mail.example.org>\n"
    b"To: bounces+nbaccjzjh5cgxszkpynz5jaca3@bounce.zgoda.example\n"
    b"Subject: Mail delivery failed: returning message to sender\n\n"
    b"This message was created automatically by mail delivery software.\n\n"
    b"A message that you sent could not be delivered to one or more of its\n"
    b"recipients. This is a permanent error. The following address(es) failed:\n\n"
    b"  jan@example.com\n"
    b"    SMTP error from remote mail server after RCPT TO:<jan@example.com>:\n"
    b"    550 5.1.1 User unknown\n"
)


def _sound(reports: list[FeedbackReport]) -> list[FeedbackReport]:
    assert reports
    for report in reports:
        assert isinstance(report, FeedbackReport)
        assert report.format != "unreadable", report.diagnostic
        json.dumps(report.to_json())
        if report.diagnostic is not None:
            assert len(report.diagnostic) <= 500
    return reports


def _only(reports: list[FeedbackReport]) -> FeedbackReport:
    assert len(reports) == 1
    return reports[0]


def test_empty_input_is_not_feedback() -> None:
    report = _only(_sound(parse_message(b"")))
    assert report.kind == FeedbackKind.NOT_FEEDBACK
    assert report.recipient is None


def test_binary_garbage_is_not_feedback() -> None:
    rng = random.Random(7)
    for size in (1, 17, 4096, 200_000):
        report = _only(_sound(parse_message(bytes(rng.randrange(256) for _ in range(size)))))
        assert report.kind == FeedbackKind.NOT_FEEDBACK


def test_line_endings_do_not_change_the_result() -> None:
    expected = _only(_sound(parse_message(EXIM)))
    assert expected.recipient == "jan@example.com"
    assert expected.bounce_class == BounceClass.HARD
    for variant in (EXIM.replace(b"\n", b"\r\n"), EXIM.replace(b"\n", b"\r")):
        assert _only(_sound(parse_message(variant))) == expected


def test_unknown_and_non_text_charsets_fall_back() -> None:
    for charset in (b"x-no-such-charset", b"rot13", b"base64", b'"utf-8"; format=flowed', b"utf-7"):
        raw = EXIM.replace(b"\n\nThis message", b"\nContent-Type: text/plain; charset=" + charset + b"\n\nThis message")
        report = _only(_sound(parse_message(raw)))
        assert report.reason == BounceReason.USER_UNKNOWN, charset


def test_a_charset_name_with_a_nul_beside_8bit_text() -> None:
    """Found by test_mutated_samples_never_raise: the standard library raises ValueError decoding a payload
    with raw 8-bit bytes under such a charset name; the parser reads the stored bytes itself."""
    sample = (SAMPLES / "ses/sns_complaint.eml").read_bytes()
    raw = sample.replace(b"charset=us-ascii\n", b"charset=\x00us-ascii\n\x80", 1)
    assert raw != sample
    report = _only(_sound(parse_message(raw)))
    assert report.kind == FeedbackKind.COMPLAINT
    assert report.recipient == "roman.glowacki@example.com"


def test_8bit_text_in_a_declared_charset_is_decoded_once() -> None:
    """An ISO-8859-2 bounce sent as 8-bit (no transfer encoding), recognised by its Polish wording alone:
    decoded twice, "Nie udało się" would read "Nie udaĹ‚o siÄ™" and the diagnostic would be mojibake."""
    text = (
        "Ta wiadomość została utworzona automatycznie.\n\n"
        "Nie udało się dostarczyć wiadomości do następujących odbiorców:\n\n"
        "  kasia.wozniak@example.pl\n"
        "    550 5.1.1 Użytkownik nie istnieje\n"
    )
    raw = (
        b"From: Poczta <poczta@poczta.example.pl>\n"
        b"To: bounces+v2irtotzxf5q2qb62hffueih6y@bounce.zgoda.example\n"
        b"Subject: Informacja\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=iso-8859-2\n"
        b"Content-Transfer-Encoding: 8bit\n\n" + text.encode("iso-8859-2")
    )
    report = _only(_sound(parse_message(raw)))
    assert report.kind == FeedbackKind.BOUNCE
    assert report.recipient == "kasia.wozniak@example.pl"
    assert report.reason == BounceReason.USER_UNKNOWN
    assert report.diagnostic is not None and "Użytkownik nie istnieje" in report.diagnostic


def test_invalid_utf8_and_raw_8bit_headers() -> None:
    raw = EXIM.replace(b"Subject: Mail", b"Subject: \xff\xfe Nie dor\xeaczono \xc3\x28 Mail").replace(
        b"User unknown", b"U\xbfytkownik nie istnieje \xe2\x82"
    )
    report = _only(_sound(parse_message(raw)))
    assert report.kind == FeedbackKind.BOUNCE
    assert report.bounce_class == BounceClass.HARD


def test_broken_encoded_words_and_base64() -> None:
    raw = (
        b"From: =?x-unknown?Q?Mailer=FF?= <MAILER-DAEMON@example.net>\n"
        b"Subject: =?utf-8?B?!!!not base64?= Undelivered\n"
        b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(b"<anna@example.com>: host x said: 550 5.1.1 no such user\n")[:-7]
        + b"@@@===\n"
    )
    report = _only(_sound(parse_message(raw)))
    assert report.recipient == "anna@example.com"


def test_truncated_mime_without_closing_boundary() -> None:
    raw = (
        b"From: MAILER-DAEMON@example.net\nSubject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="XX"\n\n--XX\n'
        b"Content-Type: text/plain\n\nfailed\n--XX\nContent-Type: message/delivery-status\n\n"
        b"Reporting-MTA: dns; example.net\n\nFinal-Recipient: rfc822; cut@example.com\nAction: failed\nStatus: 5.1.1"
    )
    report = _only(_sound(parse_message(raw)))
    assert (report.recipient, report.status, report.bounce_class) == ("cut@example.com", "5.1.1", BounceClass.HARD)


def test_boundary_that_never_appears() -> None:
    raw = b'From: a@example.com\nContent-Type: multipart/mixed; boundary="never"\n\nhello\n'
    assert _only(_sound(parse_message(raw))).kind == FeedbackKind.NOT_FEEDBACK


def test_deeply_nested_multiparts() -> None:
    depth = 400
    head = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i) for i in range(depth))
    raw = b"From: x@example.com\nMIME-Version: 1.0\n" + head + b"Content-Type: text/plain\n\nhi\n"
    raw += b"".join(b"--b%d--\n" % i for i in reversed(range(depth)))
    assert _only(_sound(parse_message(raw))).kind == FeedbackKind.NOT_FEEDBACK


def test_delivery_status_part_in_base64() -> None:
    status = base64.encodebytes(
        b"Reporting-MTA: dns; example.net\n\nFinal-Recipient: rfc822; b64@example.com\nAction: failed\n"
        b"Status: 5.2.2\nDiagnostic-Code: smtp; 552 5.2.2 mailbox full\n"
    )
    raw = (
        b"From: MAILER-DAEMON@example.net\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="XX"\n\n'
        b"--XX\nContent-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n" + status + b"--XX--\n"
    )
    report = _only(_sound(parse_message(raw)))
    assert (report.recipient, report.reason, report.bounce_class) == (
        "b64@example.com",
        BounceReason.MAILBOX_FULL,
        BounceClass.SOFT,
    )


def test_thirty_megabyte_attachment_after_the_report() -> None:
    dsn = (SAMPLES / "postfix/user_unknown.eml").read_bytes()
    closing = dsn.rindex(b"--B0UND-4711--")
    attachment = base64.encodebytes(os.urandom(23 * 1024 * 1024))
    big = (
        dsn[:closing]
        + b"--B0UND-4711\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
        + attachment
        + b"\n--B0UND-4711--\n"
    )
    assert len(big) > 30_000_000 > MAX_PARSE_BYTES
    assert _sound(parse_message(big)) == _sound(parse_message(dsn))


def test_huge_text_part_is_read_only_in_part() -> None:
    raw = EXIM + b"x" * (5 * 1024 * 1024)
    report = _only(_sound(parse_message(raw)))
    assert report.recipient == "jan@example.com"


def test_not_bytes_exactly() -> None:
    assert _only(_sound(parse_message(bytearray(EXIM)))).recipient == "jan@example.com"  # type: ignore[arg-type]
    assert _only(_sound(parse_message(memoryview(EXIM)))).recipient == "jan@example.com"  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise(raw: bytes) -> None:
    _sound(parse_message(raw))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SAMPLE_BYTES),
    st.lists(st.tuples(st.integers(min_value=0), st.binary(max_size=8), st.integers(0, 16)), max_size=8),
    st.integers(min_value=0),
)
def test_mutated_samples_never_raise(sample: bytes, edits: list[tuple[int, bytes, int]], cut: int) -> None:
    data = bytearray(sample[: cut % (len(sample) + 1)] if cut % 3 == 0 else sample)
    for position, insert, delete in edits:
        at = position % (len(data) + 1)
        data[at : at + delete] = insert
    _sound(parse_message(bytes(data)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"Content-Type: multipart/report; report-type=delivery-status; boundary=a\n",
                b"Content-Type: message/delivery-status\n",
                b"Content-Type: message/feedback-report\n",
                b"Content-Type: message/rfc822\n",
                b"Content-Type: text/rfc822-headers\n",
                b"Content-Transfer-Encoding: base64\n",
                b"--a\n",
                b"--a--\n",
                b"\n",
                b"Final-Recipient: rfc822; x@example.com\n",
                b"Action: failed\n",
                b"Status: 5.1.1\n",
                b"Feedback-Type: abuse\n",
                b"From: MAILER-DAEMON@example.com\n",
                b"Subject: Undelivered\n",
                b"  y@example.com\n",
                b"<z@example.com>:\n",
                b"550 5.7.1 spam\n",
                b"\xff\xfe\r",
            ]
        ),
        max_size=40,
    )
)
def test_structured_fragments_never_raise(lines: list[bytes]) -> None:
    _sound(parse_message(b"".join(lines)))
