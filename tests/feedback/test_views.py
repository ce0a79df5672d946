"""The staff feedback pages: the suppression list, a campaign's feedback block, a contact's messages, the mail
the local SMTP sink caught (this workspace's only) and the soft-bounce rule."""

from __future__ import annotations

import itertools
import os
import smtplib
import time
from email.header import Header
from pathlib import Path

from sqlalchemy.orm import Session

from tests.feedback.test_api import make_event, make_send
from tests.support.campaigns import make_campaign
from tests.support.factories import as_system, make_workspace
from tests.support.web import Browser
from zgoda.accounts.roles import Role
from zgoda.campaigns.models import SendStatus
from zgoda.contacts import service as contacts
from zgoda.core.settings import Settings
from zgoda.delivery.sink import SmtpSink, make_maildir
from zgoda.feedback import suppression
from zgoda.feedback.service import feedback_rules

_serial = itertools.count(1)
HTML_PART = '<html><body><h1>Zima</h1><p>Karta "zimowa" &amp; więcej</p><script>alert(1)</script></body></html>'


def caught_message(
    *, slug: str | None, campaign_id: int, subject: str, to: str = "anna@example.pl", html: str = HTML_PART
) -> bytes:
    """A campaign message as Zgoda composes it (multipart/alternative, the list headers, a DKIM signature)."""
    encoded = subject if subject.isascii() else Header(subject, "utf-8").encode()
    lines = [
        "From: Kawiarnia <news@kawiarnia.example.pl>",
        f"To: {to}",
        f"Subject: {encoded}",
        "Date: Mon, 05 Jan 2026 10:00:00 +0000",
        f"Message-ID: <m{next(_serial)}@kawiarnia.example.pl>",
        "MIME-Version: 1.0",
        "List-Unsubscribe: <https://zgoda.example/u/one-click-token>, <mailto:unsub@kawiarnia.example.pl>",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    ]
    if slug is not None:
        lines.append(f"List-Id: Karta zimowa <campaign-{campaign_id}.{slug}.kawiarnia.example.pl>")
    lines += [
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=kawiarnia.example.pl; s=zgoda;",
        " h=from:to:subject:list-unsubscribe:list-unsubscribe-post; bh=AAAA; b=BBBB",
        'Content-Type: multipart/alternative; boundary="zgoda-b"',
        "",
        "--zgoda-b",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        "Zima w kawiarni: karta zimowa.",
        "--zgoda-b",
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        html,
        "--zgoda-b--",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


def write_caught(
    maildir: Path, *, slug: str | None, campaign_id: int, subject: str, to: str = "anna@example.pl"
) -> str:
    """Store a message in the sink's format (Return-Path and Delivered-To on top) into ``maildir/new``; its key."""
    make_maildir(maildir)
    now = time.time()
    key = f"{int(now)}.M{int((now % 1) * 1_000_000):06d}P{os.getpid()}Q{next(_serial)}.testhost"
    envelope = f"Return-Path: <bounce@kawiarnia.example.pl>\r\nDelivered-To: {to}\r\n".encode()
    content = caught_message(slug=slug, campaign_id=campaign_id, subject=subject, to=to)
    (maildir / "new" / key).write_bytes(envelope + content)
    return key


# --- suppressions -----------------------------------------------------------------------------


def test_suppressions_are_in_the_navigation_and_listed_with_hints(browser: Browser) -> None:
    as_system(browser.session, browser.workspace)
    suppression.suppress(browser.session, address="jan@example.com", reason="hard_bounce", detail="550 5.1.1 no user")
    browser.session.commit()
    html = browser.sign_in(Role.VIEWER).page("/suppressions")
    assert f'href="/w/{browser.slug}/suppressions"' in html
    assert "j***@example.com" in html and "jan@example.com" not in html
    assert "hard bounce" in html and "550 5.1.1 no user" in html and "<td>test</td>" in html
    assert 'id="suppression-create"' not in html and "/remove" not in html  # viewers only read
    assert "/feedback-settings" not in html  # owner only


def test_add_search_and_remove_through_the_page(browser: Browser) -> None:
    browser.sign_in(Role.OPERATOR)
    response = browser.post("/suppressions", address="Ola.Nowak@Example.pl", reason="operator", detail="by phone")
    assert response.status_code == 200 and 'id="form-done"' in response.text
    assert "o***@example.pl" in response.text
    browser.post("/suppressions", address="piotr@example.pl", reason="unsubscribe")

    found = browser.page("/suppressions?q=OLA.NOWAK%40EXAMPLE.PL")
    assert "o***@example.pl" in found and "p***@example.pl" not in found and "1 entry found" in found
    by_reason = browser.page("/suppressions?reason=unsubscribe")
    assert "p***@example.pl" in by_reason and "o***@example.pl" not in by_reason

    bad = browser.client.get(f"/w/{browser.slug}/suppressions", params={"q": "not-an-address"})
    assert bad.status_code == 422 and 'id="search-error"' in bad.text and "address:" in bad.text
    refused = browser.post("/suppressions", address="nope", reason="operator")
    assert refused.status_code == 422 and "address:" in refused.text and 'value="nope"' in refused.text
    wrong_reason = browser.post("/suppressions", address="a@example.pl", reason="erasure")
    assert wrong_reason.status_code == 422 and "reason:" in wrong_reason.text

    as_system(browser.session, browser.workspace)
    entry = suppression.is_suppressed(browser.session, "ola.nowak@example.pl")
    assert entry is not None
    removed = browser.post(f"/suppressions/{entry.id}/remove", note="asked to be mailed again")
    assert removed.status_code == 200 and "off the list" in removed.text
    as_system(browser.session, browser.workspace)
    assert suppression.is_suppressed(browser.session, "ola.nowak@example.pl") is None


def test_removing_a_complaint_shows_the_rule(browser: Browser) -> None:
    as_system(browser.session, browser.workspace)
    entry, _ = suppression.suppress(browser.session, address="zla@example.pl", reason="complaint")
    browser.session.commit()
    page = browser.sign_in(Role.DPO).page("/suppressions")
    assert "only after the person gives a fresh consent" in page
    response = browser.post(f"/suppressions/{entry.id}/remove", note="please")
    assert response.status_code == 409 and 'id="form-error"' in response.text
    assert "fresh consent" in response.text
    as_system(browser.session, browser.workspace)
    assert suppression.is_suppressed(browser.session, "zla@example.pl") is not None

    other = make_workspace(browser.session)
    as_system(browser.session, other)
    theirs, _ = suppression.suppress(browser.session, address="x@example.pl", reason="operator")
    browser.session.commit()
    assert browser.post(f"/suppressions/{theirs.id}/remove").status_code == 404


def test_the_list_pages(browser: Browser) -> None:
    as_system(browser.session, browser.workspace)
    for number in range(52):
        suppression.suppress(browser.session, address=f"p{number}@example.pl", reason="operator")
    browser.session.commit()
    first = browser.sign_in(Role.VIEWER).page("/suppressions")
    assert "p51" not in first and "1–50 of 52" in first and 'id="page-older"' in first
    second = browser.page("/suppressions?offset=50")
    assert "51–52 of 52" in second and 'id="page-newer"' in second


# --- campaign and contact ---------------------------------------------------------------------


def test_campaign_page_loads_the_feedback_block(browser: Browser) -> None:
    session, workspace = browser.session, browser.workspace
    campaign = make_campaign(session, workspace, name="Karta zimowa")
    as_system(session, workspace)
    campaign.status = "sent"
    people = [
        contacts.upsert_contact(session, contacts.ContactData(email=f"k{n}@example.pl")).contact for n in range(4)
    ]
    sends = [make_send(session, workspace, campaign, person) for person in people]
    make_event(session, workspace, sends[0], "delivery")
    make_event(session, workspace, sends[1], "bounce", bounce_class="hard", reason="user_unknown")
    make_event(session, workspace, sends[2], "complaint")
    make_event(session, workspace, sends[3], "open")
    session.commit()

    page = browser.sign_in(Role.VIEWER).page(f"/campaigns/{campaign.id}")
    assert f'hx-get="/w/{browser.slug}/campaigns/{campaign.id}/feedback"' in page
    fragment = browser.client.get(f"/w/{browser.slug}/campaigns/{campaign.id}/feedback", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert 'id="feedback-bounced-hard">1<' in fragment.text and 'id="feedback-complaints">1<' in fragment.text
    assert 'id="rate-bounce">25.00%<' in fragment.text and 'id="rate-complaint">25.00%<' in fragment.text
    assert "user unknown" in fragment.text and "profiling consent" in fragment.text
    full = browser.page(f"/campaigns/{campaign.id}/feedback")
    assert "<html" in full and "Feedback: Karta zimowa" in full and 'id="feedback-opens">1<' in full


def test_draft_campaign_has_no_feedback_block(browser: Browser) -> None:
    campaign = make_campaign(browser.session, browser.workspace)
    browser.session.commit()
    assert "/feedback" not in browser.sign_in(Role.VIEWER).page(f"/campaigns/{campaign.id}")


def test_contact_page_shows_messages_and_events(browser: Browser) -> None:
    session, workspace = browser.session, browser.workspace
    as_system(session, workspace)
    contact = contacts.upsert_contact(session, contacts.ContactData(email="ola@example.pl")).contact
    campaign = make_campaign(session, workspace, name="Karta zimowa")
    send = make_send(session, workspace, campaign, contact)
    make_event(session, workspace, send, "bounce", bounce_class="soft", reason="mailbox_full", status="4.2.2")
    refused = make_campaign(session, workspace, name="Wiosna")
    make_send(session, workspace, refused, contact, status=SendStatus.REFUSED, reason="suppressed")
    session.commit()

    page = browser.sign_in(Role.VIEWER).page(f"/contacts/{contact.id}")
    assert "Messages and events" in page and 'id="contact-messages"' in page
    assert "Karta zimowa" in page and "mailbox full" in page and "4.2.2" in page
    assert page.index("Wiosna") < page.index("Karta zimowa")  # newest first
    assert 'id="all-messages"' not in page  # all of them fit

    everything = browser.page(f"/contacts/{contact.id}/messages")
    assert "Karta zimowa" in everything and "suppressed" in everything
    empty = contacts.upsert_contact(browser.scoped(), contacts.ContactData(email="nowy@example.pl")).contact
    session.commit()
    assert "No message was sent to this contact yet." in browser.page(f"/contacts/{empty.id}")


# --- caught mail ------------------------------------------------------------------------------


def test_caught_mail_without_a_sink_explains_how_to_run_one(browser: Browser, settings: Settings) -> None:
    settings.sink_maildir = None
    html = browser.sign_in(Role.VIEWER).page("/caught-mail")
    assert 'id="sink-off"' in html and "zgoda smtp-sink" in html
    assert browser.client.get(f"/w/{browser.slug}/caught-mail/123.M1P1Q1.host").status_code == 404


def test_caught_mail_shows_only_this_workspaces_messages(
    browser: Browser, settings: Settings, session: Session, tmp_path: Path
) -> None:
    maildir = settings.sink_maildir = tmp_path / "sink"
    ours = make_campaign(session, browser.workspace, name="Karta zimowa")
    other = make_workspace(session, slug=f"{browser.slug}-x")  # a slug that starts like ours
    theirs = make_campaign(session, other, name="Obca")
    session.commit()
    mine = write_caught(maildir, slug=browser.slug, campaign_id=ours.id, subject="Zima w kawiarni")
    foreign = write_caught(maildir, slug=other.slug, campaign_id=theirs.id, subject="Foreign subject")
    forged = write_caught(maildir, slug=browser.slug, campaign_id=theirs.id, subject="Forged subject")
    write_caught(maildir, slug=None, campaign_id=0, subject="No list id")

    html = browser.sign_in(Role.VIEWER).page("/caught-mail")
    assert "Zima w kawiarni" in html and f"/caught-mail/{mine}" in html and "Karta zimowa" in html
    assert "Foreign subject" not in html and "Forged subject" not in html and "No list id" not in html
    for key in (foreign, forged, "../../etc/passwd", "nothing-here"):
        assert browser.client.get(f"/w/{browser.slug}/caught-mail/{key}").status_code == 404, key


def test_a_caught_message_shows_headers_and_sandboxed_parts(
    browser: Browser, settings: Settings, session: Session, tmp_path: Path
) -> None:
    maildir = settings.sink_maildir = tmp_path / "sink"
    campaign = make_campaign(session, browser.workspace, name="Karta zimowa")
    session.commit()
    key = write_caught(maildir, slug=browser.slug, campaign_id=campaign.id, subject="Zimowa karta – już jest")
    response = browser.sign_in(Role.VIEWER).client.get(f"/w/{browser.slug}/caught-mail/{key}")
    assert response.status_code == 200
    html = response.text
    assert "Zimowa karta – już jest" in html
    for header in ("List-Unsubscribe", "List-Unsubscribe-Post", "DKIM-Signature", "List-Id", "Return-Path"):
        assert f"<code>{header}</code>" in html
    assert "List-Unsubscribe=One-Click" in html and "d=kawiarnia.example.pl; s=zgoda;" in html
    assert html.count(">present<") == 3
    assert '<iframe id="message-html" sandbox=""' in html
    assert 'srcdoc="&lt;html&gt;&lt;body&gt;&lt;h1&gt;Zima&lt;/h1&gt;' in html  # escaped into the attribute
    assert "&lt;script&gt;" in html and "<script>alert(1)</script>" not in html
    assert "Zima w kawiarni: karta zimowa." in html
    assert "img-src data:" in response.headers["content-security-policy"]


def test_caught_mail_reads_what_the_real_sink_stored(
    browser: Browser, settings: Settings, session: Session, tmp_path: Path
) -> None:
    maildir = settings.sink_maildir = tmp_path / "sink"
    campaign = make_campaign(session, browser.workspace, name="Karta zimowa")
    session.commit()
    content = caught_message(slug=browser.slug, campaign_id=campaign.id, subject="Przez SMTP", to="ola@example.pl")
    with SmtpSink(maildir) as sink, smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("bounce@kawiarnia.example.pl", ["ola@example.pl"], content)
        assert sink.wait_for(1)
    html = browser.sign_in(Role.VIEWER).page("/caught-mail")
    assert "Przez SMTP" in html and "ola@example.pl" in html


# --- settings ---------------------------------------------------------------------------------


def test_feedback_settings_page_owner_saves_the_rule(browser: Browser) -> None:
    browser.sign_in(Role.OPERATOR)
    assert browser.client.get(f"/w/{browser.slug}/feedback-settings").status_code == 403
    browser.sign_in(Role.OWNER)
    page = browser.page("/feedback-settings")
    assert 'value="3"' in page and 'value="30"' in page
    bad = browser.post("/feedback-settings", soft_bounce_limit="50", soft_bounce_days="30")
    assert bad.status_code == 422 and "soft_bounce_limit:" in bad.text and 'value="50"' in bad.text
    not_a_number = browser.post("/feedback-settings", soft_bounce_limit="5", soft_bounce_days="soon")
    assert not_a_number.status_code == 422 and "soft_bounce_days" in not_a_number.text
    saved = browser.post("/feedback-settings", soft_bounce_limit="5", soft_bounce_days="14")
    assert saved.status_code == 200 and 'id="form-done"' in saved.text
    browser.session.refresh(browser.workspace)
    assert feedback_rules(browser.workspace) == (5, 14)
    assert "/feedback-settings" in browser.page("/suppressions")
