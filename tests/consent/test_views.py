"""The HTML pages for sources, purposes, notices, contacts and their consent timelines."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.support.consent import record, workspace_with_contact
from tests.support.factories import as_system
from tests.support.web import Browser
from zgoda.accounts.roles import Role
from zgoda.audit.models import AuditEntry
from zgoda.consent import ledger, purposes, sources
from zgoda.consent.models import ConsentEvent, Source, SourceEvidence
from zgoda.contacts import service as contacts
from zgoda.contacts.models import Contact
from zgoda.core.clock import utcnow
from zgoda.core.settings import Settings


def _contact(browser: Browser, email: str = "anna@example.pl", **extra: Any) -> Contact:
    contact = contacts.upsert_contact(browser.scoped(), contacts.ContactData(email=email, **extra)).contact
    browser.session.commit()
    return contact


# --- navigation ------------------------------------------------------------------------------


def test_the_new_sections_are_in_the_navigation(browser: Browser) -> None:
    html = browser.sign_in(Role.VIEWER).page("/")
    for path in ("contacts", "sources", "purposes", "settings", "lists", "campaigns"):
        assert f'href="/w/{browser.slug}/{path}"' in html
    assert 'title="Arrives with a later release">Requests' in html


# --- sources ---------------------------------------------------------------------------------


def test_create_a_source_and_attest_it(browser: Browser) -> None:
    browser.sign_in(Role.OPERATOR)
    created = browser.post("/sources", name="Sklep WWW", kind="shop", description="Checkout")
    assert created.status_code == 200 and 'id="source-name">Sklep WWW<' in created.text
    assert 'id="attest-form"' not in created.text
    duplicate = browser.post("/sources", name="Sklep WWW", kind="shop")
    assert duplicate.status_code == 422 and "already exists" in duplicate.text
    assert browser.count(Source) == 1
    source_id = browser.scoped().scalars(select(Source.id)).one()
    assert browser.post(f"/sources/{source_id}/attestation", attestation="x" * 40).status_code == 403

    browser.sign_in(Role.OWNER)
    short = browser.post(f"/sources/{source_id}/attestation", attestation="we ask")
    assert short.status_code == 422 and "attestation" in short.text
    statement = "Unticked checkbox under the order form, wording v3, confirmed by email."
    attested = browser.post(f"/sources/{source_id}/attestation", attestation=statement)
    assert attested.status_code == 200
    assert statement in attested.text and browser.users[Role.OWNER].email in attested.text
    listing = browser.page("/sources")
    assert "attested" in listing and "Sklep WWW" in listing


def test_evidence_upload_and_download_through_the_pages(browser: Browser, settings: Settings) -> None:
    browser.sign_in(Role.OPERATOR)
    as_system(browser.session, browser.workspace)
    source = sources.create_source(browser.session, name="CRM", kind="crm")
    browser.session.commit()
    response = browser.client.post(
        f"/w/{browser.slug}/sources/{source.id}/evidence",
        data={"csrf_token": browser.csrf},
        files={"file": ("formularz.png", b"\x89PNG fake screenshot", "image/png")},
    )
    assert response.status_code == 200 and "formularz.png" in response.text
    evidence = browser.scoped().scalars(select(SourceEvidence)).one()
    link = f"/w/{browser.slug}/sources/{source.id}/evidence/{evidence.id}"
    assert f'href="{link}"' in response.text
    browser.sign_in(Role.VIEWER)
    downloaded = browser.client.get(link)
    assert downloaded.status_code == 200 and downloaded.content == b"\x89PNG fake screenshot"
    assert downloaded.headers["content-disposition"].startswith("attachment;")

    browser.sign_in(Role.OPERATOR)
    empty = browser.client.post(
        f"/w/{browser.slug}/sources/{source.id}/evidence",
        data={"csrf_token": browser.csrf},
        files={"file": ("empty.txt", b"", "text/plain")},
    )
    assert empty.status_code == 422 and "empty" in empty.text
    assert browser.count(SourceEvidence) == 1


# --- purposes and notices --------------------------------------------------------------------


def test_purposes_and_notices_pages(browser: Browser) -> None:
    browser.sign_in(Role.DPO)
    html = browser.page("/purposes")
    assert "email_marketing" in html and "No notice yet" in html
    bad = browser.post("/purposes", key="Loyalty SMS", name="Loyalty", channel="sms")
    assert bad.status_code == 422 and "key" in bad.text and 'value="Loyalty SMS"' in bad.text
    made = browser.post("/purposes", key="loyalty_sms", name="Loyalty", channel="sms", validity_days="365")
    assert made.status_code == 200 and "valid 365 days" in made.text

    purpose = purposes.purpose_by_key(browser.scoped(), "loyalty_sms")
    text = "Zgadzam się na SMS-y.\n  Wycofać zgodę można w każdej chwili."
    notice = browser.post(f"/purposes/{purpose.id}/notices", language="pl", title="Zgoda SMS", text=text)
    assert notice.status_code == 200
    assert re.search(r'id="notice-text"[^>]*>Zgadzam się na SMS-y\.\n  Wycofać', notice.text)
    stored = purposes.list_notices(browser.scoped(), purpose_id=purpose.id)[0]
    assert stored.sha256 in notice.text
    assert "Correct this version" in notice.text

    browser.sign_in(Role.VIEWER)
    assert browser.post(f"/purposes/{purpose.id}/notices", language="pl", title="X", text="Y").status_code == 403
    page = browser.page(f"/notices/{stored.id}")
    assert "Correct this version" not in page and "Zgoda SMS" in page


def test_a_used_notice_cannot_be_corrected_from_its_page(browser: Browser) -> None:
    contact = _contact(browser)
    as_system(browser.session, browser.workspace)
    purpose = purposes.purpose_by_key(browser.session, "email_marketing")
    notice = purposes.create_notice(browser.session, purpose_id=purpose.id, language="pl", title="N", text="Tak.")
    ledger.record_event(
        browser.session,
        ledger.NewEvent(contact=contact, purpose=purpose, event_type="grant", method="web_form", notice=notice),
    )
    browser.session.commit()
    browser.sign_in(Role.OWNER)
    assert "immutable" in browser.page(f"/notices/{notice.id}")
    refused = browser.post(f"/notices/{notice.id}", title="N", text="Nie.")
    assert refused.status_code == 422 and "immutable" in refused.text


# --- contacts --------------------------------------------------------------------------------


def test_contact_list_search_and_badges(browser: Browser) -> None:
    anna = _contact(browser, "anna@example.pl", first_name="Anna")
    _contact(browser, "piotr@example.pl", first_name="Piotr")
    record(browser.scoped(), anna, "grant")
    browser.session.commit()
    browser.sign_in(Role.VIEWER)
    html = browser.page("/contacts")
    assert "anna@example.pl" in html and "piotr@example.pl" in html
    assert 'class="badge badge-granted"' in html and "email_marketing: granted" in html
    live = browser.client.get(f"/w/{browser.slug}/contacts", params={"q": "PIOTR"}, headers={"HX-Request": "true"})
    assert live.status_code == 200
    assert "<html" not in live.text and "piotr@example.pl" in live.text and "anna@example.pl" not in live.text


def test_contact_list_pages(browser: Browser) -> None:
    as_system(browser.session, browser.workspace)
    for number in range(53):
        contacts.upsert_contact(browser.session, contacts.ContactData(email=f"k{number:02d}@example.pl"))
    browser.session.commit()
    browser.sign_in(Role.VIEWER)
    first = browser.page("/contacts")
    assert "k52@example.pl" in first and "k02@example.pl" not in first and 'id="page-next"' in first
    second = browser.page("/contacts?offset=50")
    assert "k02@example.pl" in second and "k52@example.pl" not in second and 'id="page-previous"' in second


def test_add_a_contact_by_hand(browser: Browser) -> None:
    browser.sign_in(Role.OPERATOR)
    bad = browser.post("/contacts", email="anna(at)example.pl", phone="", first_name="Anna")
    assert bad.status_code == 422 and "email" in bad.text
    assert browser.count(Contact) == 0
    made = browser.post("/contacts", email="anna@example.pl", phone="601 234 567", first_name="Anna")
    assert made.status_code == 200 and "+48601234567" in made.text
    browser.sign_in(Role.DPO)
    assert browser.post("/contacts", email="ola@example.pl").status_code == 403


def test_contact_page_shows_the_timeline_with_evidence_and_notice(browser: Browser) -> None:
    contact = _contact(browser, first_name="Anna", attributes={"city": "Poznań"})
    as_system(browser.session, browser.workspace)
    source = sources.create_source(browser.session, name="Sklep WWW", kind="shop")
    purpose = purposes.purpose_by_key(browser.session, "email_marketing")
    notice = purposes.create_notice(browser.session, purpose_id=purpose.id, language="pl", title="N", text="Tak.")
    event = ledger.record_event(
        browser.session,
        ledger.NewEvent(
            contact=contact,
            purpose=purpose,
            event_type="grant",
            method="web_form",
            source=source,
            notice=notice,
            occurred_at=utcnow() - timedelta(days=1),
            evidence=ledger.Evidence(ip="203.0.113.7", page_url="https://sklep.example.pl/zapis"),
        ),
    )
    browser.session.commit()
    browser.sign_in(Role.VIEWER)
    html = browser.page(f"/contacts/{contact.id}")
    assert 'id="state-email_marketing">granted<' in html and 'id="state-sms_marketing">none<' in html
    assert "203.0.113.7" in html and "https://sklep.example.pl/zapis" in html
    assert "<code>city</code> Poznań" in html
    assert f'href="/w/{browser.slug}/notices/{notice.id}">v1 pl<' in html
    assert f'href="/w/{browser.slug}/sources/{source.id}">Sklep WWW<' in html
    assert event.hash[:12] in html and "test" in html  # the actor
    assert 'id="record-consent"' not in html  # viewers do not record consent
    assert f'href="/w/{browser.slug}/contacts/{contact.id}/proof"' in html  # everyone may print the proof


def test_record_consent_from_the_contact_page(browser: Browser) -> None:
    contact = _contact(browser)
    browser.sign_in(Role.DPO)
    html = browser.page(f"/contacts/{contact.id}")
    assert 'id="record-consent"' in html
    local = (utcnow() - timedelta(hours=2)).astimezone(ZoneInfo(browser.workspace.time_zone))
    recorded = browser.post(
        f"/contacts/{contact.id}/consents",
        purpose="sms_marketing",
        type="grant",
        legal_basis="consent",
        method="operator",
        occurred_at=local.strftime("%Y-%m-%dT%H:%M:%S"),
        note="Paper form no. 12",
    )
    assert recorded.status_code == 200
    assert 'id="state-sms_marketing">granted<' in recorded.text and "Paper form no. 12" in recorded.text
    event = browser.scoped().scalars(select(ConsentEvent)).one()
    assert abs(event.occurred_at - local) < timedelta(seconds=1)  # read in the workspace's time zone
    assert event.actor == browser.users[Role.DPO].email and event.method == "operator"
    actions = browser.scoped().scalars(select(AuditEntry.action)).all()
    assert "consent.record" in actions


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"purpose": "sms_marketing", "type": "grant", "occurred_at": "2999-01-01T10:00"}, "occurred_at"),
        ({"purpose": "sms_marketing", "type": "grant", "occurred_at": "yesterday"}, "occurred_at"),
        ({"purpose": "nothing", "type": "grant"}, "purpose"),
        ({"purpose": "sms_marketing", "type": "withdraw", "requires_confirmation": "1"}, "requires_confirmation"),
        ({}, "purpose"),
    ],
)
def test_a_refused_event_rerenders_the_page_and_writes_nothing(
    browser: Browser, fields: dict[str, str], message: str
) -> None:
    contact = _contact(browser)
    browser.sign_in(Role.OPERATOR)
    response = browser.post(f"/contacts/{contact.id}/consents", **fields)
    assert response.status_code == 422
    assert f'id="form-error">{message}' in response.text
    assert 'id="record-consent"' in response.text
    assert browser.count(ConsentEvent) == 0


def test_another_workspaces_contact_page_is_a_404(browser: Browser, client: TestClient, session: Session) -> None:
    other = Browser(client, session)
    contact = _contact(other, "tajne@example.pl")
    browser.sign_in(Role.OWNER)
    assert client.get(f"/w/{browser.slug}/contacts/{contact.id}").status_code == 404
    response = browser.post(f"/contacts/{contact.id}/consents", purpose="email_marketing", type="grant")
    assert response.status_code == 404
    assert "tajne@example.pl" not in browser.page("/contacts?q=tajne")


# --- dashboard -------------------------------------------------------------------------------


def test_the_dashboard_counts_consent_per_purpose_in_this_workspace_only(browser: Browser) -> None:
    elsewhere, stranger = workspace_with_contact(browser.session, "obcy@example.pl")
    record(browser.session, stranger, "grant", at=utcnow() - timedelta(days=1))
    anna = _contact(browser, "anna@example.pl")
    jan = _contact(browser, "jan@example.pl")  # _contact leaves the session in the browser's workspace
    record(browser.session, anna, "grant", at=utcnow() - timedelta(days=2))
    record(browser.session, jan, "grant", at=utcnow() - timedelta(days=2))
    record(browser.session, jan, "withdraw", at=utcnow() - timedelta(days=1))
    browser.session.commit()

    html = browser.sign_in(Role.VIEWER).page("/")

    def cell(purpose: str, status: str) -> str:
        row = re.search(rf'<tr data-purpose="{purpose}">(.*?)</tr>', html, re.S)
        assert row is not None, f"no row for {purpose}"
        found = re.search(rf'data-status="{status}">(\d+)<', row.group(1))
        assert found is not None
        return found.group(1)

    assert cell("email_marketing", "granted") == "1"  # not 2: the other workspace's grant is its own
    assert cell("email_marketing", "withdrawn") == "1"
    assert cell("sms_marketing", "granted") == "0"
    assert re.search(r'<div class="value">2</div><a href="/w/[^"]+/contacts">contacts', html)
    assert elsewhere.slug not in html
