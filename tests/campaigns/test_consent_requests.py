"""Consent requests (double opt-in, re-permission, refresh): whom they reach, what they carry, what the link records."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.support.consent import record
from tests.support.factories import as_system
from tests.support.sending import HTML, SendingSetup, sending_setup
from zgoda.audiences import service as audiences
from zgoda.campaigns import sending
from zgoda.campaigns import service as campaigns
from zgoda.campaigns.models import Campaign, CampaignKind, Send, SendStatus
from zgoda.consent import purposes
from zgoda.consent.models import ConsentEvent, ConsentEvidence, ConsentState, Notice
from zgoda.contacts import service as contacts
from zgoda.contacts.models import Contact
from zgoda.core.clock import utcnow
from zgoda.core.db import Database
from zgoda.core.errors import Conflict, InvalidInput
from zgoda.core.settings import Settings
from zgoda.delivery.sink import SmtpSink
from zgoda.delivery.transport import SmtpSettings
from zgoda.feedback.subject import CONFIRMATION_DAYS

NOTICE_TEXT = (
    "Zgadzam się na otrzymywanie newslettera Kawiarni Pod Zegarem e-mailem & <b>ofert</b>.\n"
    "Zgodę mogę wycofać w każdej chwili."
)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    with SmtpSink(tmp_path / "maildir") as running:
        yield running


@pytest.fixture
def asking(session: Session) -> tuple[SendingSetup, Campaign, dict[str, Contact], Notice]:
    """The sending setup's list plus a pending sign-up and an expired consent, a notice, and a consent request."""
    setup = sending_setup(session, eligible=1)
    marketing = purposes.purpose_by_key(session, "email_marketing")
    notice = purposes.create_notice(
        session, purpose_id=marketing.id, language="pl", title="Newsletter", text=NOTICE_TEXT
    )
    pending = contacts.upsert_contact(session, contacts.ContactData(email="nowa@example.pl", first_name="Ola")).contact
    record(session, pending, "grant", at=utcnow() - timedelta(hours=1), requires_confirmation=True)
    expired = contacts.upsert_contact(session, contacts.ContactData(email="dawna@example.pl")).contact
    record(session, expired, "grant", at=utcnow() - timedelta(days=3))
    record(session, expired, "expire", at=utcnow() - timedelta(days=1))
    audiences.add_members(session, list_id=setup.campaign.list_id or 0, contact_ids=[pending.id, expired.id])
    template = campaigns.create_template(session, name="Potwierdzenie", subject="Potwierdź zapis", html=HTML)
    campaign = campaigns.create_campaign(
        session,
        name="Potwierdź zapis",
        kind=CampaignKind.CONSENT_REQUEST,
        purpose_key="email_marketing",
        template_id=template.id,
        from_name="Kawiarnia",
        from_email="news@kawiarnia.example.pl",
        list_id=setup.campaign.list_id,
        language="pl",
    )
    who = {"granted": setup.eligible[0], "pending": pending, "expired": expired, **setup.refused}
    session.commit()
    return setup, campaign, who, notice


def _messages(maildir: Path) -> dict[str, email.message.EmailMessage]:
    found = {}
    for path in (maildir / "new").iterdir():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found[str(message["To"])] = message
    return found  # type: ignore[return-value]


def _send(db: Database, session: Session, settings: Settings, sink: SmtpSink, campaign_id: int) -> None:
    settings.base_url = "https://zgoda.example.com"
    campaigns.send_campaign(session, campaign_id=campaign_id)
    session.commit()
    sending.prepare(db, campaign_id)
    sending.run(db, campaign_id, settings, smtp=SmtpSettings(host=sink.host, port=sink.port), connections=2)


@pytest.fixture
def sent(
    db: Database,
    session: Session,
    settings: Settings,
    sink: SmtpSink,
    tmp_path: Path,
    asking: tuple[SendingSetup, Campaign, dict[str, Contact], Notice],
) -> dict[str, email.message.EmailMessage]:
    """The consent request sent through the sink: the messages it caught, by recipient."""
    _send(db, session, settings, sink, asking[1].id)
    return _messages(tmp_path / "maildir")


def _confirm_path(message: email.message.EmailMessage) -> str:
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    found = re.search(r"https://zgoda\.example\.com(/confirm/\S+)", text)
    assert found is not None, text
    return found.group(1)


def _form_token(page: str) -> str:
    """The confirmation page's form token (the button posts it)."""
    found = re.search(r'name="form_token" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


def _state(session: Session, contact: Contact) -> ConsentState:
    session.expire_all()
    marketing = purposes.purpose_by_key(session, "email_marketing")
    state = session.scalar(
        select(ConsentState).where(ConsentState.contact_id == contact.id, ConsentState.purpose_id == marketing.id)
    )
    assert state is not None
    return state


def test_a_consent_request_reaches_pending_and_granted_contacts_and_nobody_without_consent(
    session: Session, asking: tuple[SendingSetup, Campaign, dict[str, Contact], Notice]
) -> None:
    setup, campaign, _, _ = asking
    as_system(session, setup.workspace)
    asked = audiences.preview_audience(
        session, purpose_key="email_marketing", list_id=campaign.list_id, consent_request=True
    )
    marketing = audiences.preview_audience(session, purpose_key="email_marketing", list_id=campaign.list_id)
    assert (asked.total, asked.eligible) == (5, 2)  # granted and pending
    assert asked.excluded["consent_pending"] == 0
    assert (asked.excluded["no_consent"], asked.excluded["consent_withdrawn"], asked.excluded["consent_expired"]) == (
        1,
        1,
        1,
    )
    assert (marketing.eligible, marketing.excluded["consent_pending"]) == (1, 1)


def test_every_message_shows_the_notice_and_a_confirmation_link_the_template_cannot_drop(
    session: Session,
    asking: tuple[SendingSetup, Campaign, dict[str, Contact], Notice],
    sent: dict[str, email.message.EmailMessage],
) -> None:
    _, campaign, who, notice = asking
    assert set(sent) == {who["granted"].email, who["pending"].email}
    for message in sent.values():
        html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "Zgadzam się na otrzymywanie newslettera" in html and "Zgadzam się na otrzymywanie newslettera" in text
        assert "e-mailem &amp; &lt;b&gt;ofert&lt;/b&gt;." in html and "<b>ofert" not in html  # the text, escaped
        assert "e-mailem & <b>ofert</b>." in text
        assert 'href="https://zgoda.example.com/confirm/' in html
        assert len(_confirm_path(message)) > len("/confirm/") + 20  # a signed token follows
        assert message["List-Unsubscribe"].startswith("<https://zgoda.example.com/u/")  # still a footer and headers
    rows = {row.contact_id: row for row in session.scalars(select(Send).where(Send.campaign_id == campaign.id))}
    assert rows[who["pending"].id].status == SendStatus.SENT
    assert rows[who["expired"].id].reason == "consent_expired"
    session.refresh(campaign)
    assert (campaign.content or {})["notice_id"] == notice.id
    with pytest.raises(Conflict):  # shown to people since the start: what they agree to cannot change
        purposes.update_notice(session, notice_id=notice.id, title="Newsletter", text="Inna treść.")


def test_the_link_confirms_a_pending_sign_up_with_evidence_and_once(
    session: Session,
    client: TestClient,
    asking: tuple[SendingSetup, Campaign, dict[str, Contact], Notice],
    sent: dict[str, email.message.EmailMessage],
) -> None:
    setup, campaign, who, notice = asking
    path = _confirm_path(sent[who["pending"].email])
    page = client.get(path)
    assert page.status_code == 200
    assert "Zgodę mogę wycofać w każdej chwili." in page.text and 'id="agree"' in page.text
    assert "&lt;b&gt;ofert&lt;/b&gt;" in page.text
    as_system(session, setup.workspace)
    assert _state(session, who["pending"]).status == "pending"  # a GET changes nothing
    assert client.post(path, data={}).status_code == 403  # no form token: a bare POST is not the page's button
    form_token = _form_token(page.text)
    done = client.post(path, data={"form_token": form_token}, headers={"user-agent": "Firefox/140"})
    assert done.status_code == 200 and 'id="done"' in done.text
    state = _state(session, who["pending"])
    assert state.status == "granted"
    event = session.get(ConsentEvent, state.event_id)
    assert event is not None
    assert (event.event_type, event.method, event.notice_id) == ("confirm", "double_opt_in", notice.id)
    send = session.scalars(select(Send).where(Send.campaign_id == campaign.id, Send.contact_id == who["pending"].id))
    assert event.reference == f"send:{send.one().id}"
    evidence = session.get(ConsentEvidence, event.id)
    assert evidence is not None and evidence.user_agent == "Firefox/140" and evidence.page_url.endswith(path)
    record(session, who["pending"], "withdraw")  # unsubscribed since: this old button gives nothing back
    session.commit()
    again = client.post(path, data={"form_token": form_token})
    assert again.status_code == 200 and 'id="done"' in again.text
    count = select(ConsentEvent.id).where(ConsentEvent.contact_id == who["pending"].id)
    assert len(session.scalars(count).all()) == 3  # the pending grant, one confirmation, the withdrawal
    assert _state(session, who["pending"]).status == "withdrawn"


def test_a_consent_withdrawn_after_the_message_is_granted_anew_by_the_button(
    session: Session,
    client: TestClient,
    asking: tuple[SendingSetup, Campaign, dict[str, Contact], Notice],
    sent: dict[str, email.message.EmailMessage],
) -> None:
    setup, _, who, notice = asking
    path = _confirm_path(sent[who["granted"].email])
    as_system(session, setup.workspace)
    record(session, who["granted"], "withdraw")
    session.commit()
    page = client.get(path)
    form_token = _form_token(page.text)
    assert client.post(path, data={"form_token": form_token}).status_code == 200
    as_system(session, setup.workspace)
    state = _state(session, who["granted"])
    event = session.get(ConsentEvent, state.event_id)
    assert state.status == "granted" and event is not None
    assert (event.event_type, event.method, event.notice_id) == ("grant", "double_opt_in", notice.id)


def test_an_old_link_has_expired_and_records_nothing(
    session: Session,
    client: TestClient,
    asking: tuple[SendingSetup, Campaign, dict[str, Contact], Notice],
    sent: dict[str, email.message.EmailMessage],
) -> None:
    setup, campaign, who, _ = asking
    path = _confirm_path(sent[who["pending"].email])
    fresh = client.get(path)
    form_token = _form_token(fresh.text)
    as_system(session, setup.workspace)
    send = session.scalars(select(Send).where(Send.campaign_id == campaign.id, Send.contact_id == who["pending"].id))
    row = send.one()
    assert row.sent_at is not None
    row.sent_at = row.sent_at - timedelta(days=CONFIRMATION_DAYS + 1)
    session.commit()
    page = client.get(path)
    assert page.status_code == 410 and 'id="expired"' in page.text and 'id="agree"' not in page.text
    late = client.post(path, data={"form_token": form_token})
    assert late.status_code == 410
    assert _state(session, who["pending"]).status == "pending"


def test_the_link_refreshes_a_granted_consent(
    session: Session,
    client: TestClient,
    asking: tuple[SendingSetup, Campaign, dict[str, Contact], Notice],
    sent: dict[str, email.message.EmailMessage],
) -> None:
    setup, _, who, _ = asking
    path = _confirm_path(sent[who["granted"].email])
    page = client.get(f"{path}?lang=en")
    assert "Yes, I agree" in page.text
    form_token = _form_token(page.text)
    assert client.post(path, data={"form_token": form_token}).status_code == 200
    as_system(session, setup.workspace)
    state = _state(session, who["granted"])
    event = session.get(ConsentEvent, state.event_id)
    assert state.status == "granted" and event is not None and event.event_type == "refresh"


def test_links_of_one_kind_do_not_open_pages_of_the_other(
    session: Session,
    client: TestClient,
    asking: tuple[SendingSetup, Campaign, dict[str, Contact], Notice],
    sent: dict[str, email.message.EmailMessage],
) -> None:
    setup, _, who, _ = asking
    message = sent[who["pending"].email]
    confirm_token = _confirm_path(message).removeprefix("/confirm/")
    unsubscribe_token = str(message["List-Unsubscribe"]).split("/u/")[1].split(">")[0]
    assert client.get(f"/u/{confirm_token}").status_code == 404
    assert client.get(f"/confirm/{unsubscribe_token}").status_code == 404
    forged = confirm_token[:-2] + ("AA" if not confirm_token.endswith("AA") else "BB")
    assert client.post(f"/confirm/{forged}", data={"form_token": "x"}).status_code == 404
    as_system(session, setup.workspace)
    assert _state(session, who["pending"]).status == "pending"


def test_a_consent_request_needs_the_notice_it_shows(session: Session) -> None:
    setup = sending_setup(session, eligible=1)
    template = campaigns.create_template(session, name="Bez treści", subject="Potwierdź", html=HTML)
    values = {
        "purpose_key": "email_marketing",
        "template_id": template.id,
        "from_name": "Kawiarnia",
        "from_email": "news@kawiarnia.example.pl",
        "list_id": setup.campaign.list_id,
        "language": "pl",
    }
    with pytest.raises(InvalidInput) as no_notice:
        campaigns.create_campaign(session, name="Prośba", kind=CampaignKind.CONSENT_REQUEST, **values)  # type: ignore[arg-type]
    assert no_notice.value.field == "purpose" and "no notice in 'pl'" in no_notice.value.detail
    with pytest.raises(InvalidInput) as bad_kind:
        campaigns.create_campaign(session, name="Prośba", kind="newsletter", **values)  # type: ignore[arg-type]
    assert bad_kind.value.field == "kind"
    assert session.scalar(select(Campaign.id).where(Campaign.name == "Prośba")) is None
