"""The pages for templates, campaigns, sending domains and sending settings: they render, forms work."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.support.campaigns import make_campaign, make_list, make_sendable, make_sending_domain, make_template
from tests.support.consent import record
from tests.support.factories import make_workspace
from tests.support.web import Browser
from zgoda.accounts.models import Workspace
from zgoda.accounts.roles import Role
from zgoda.audiences import service as audiences
from zgoda.audit.models import AuditEntry
from zgoda.campaigns.models import Campaign, Template
from zgoda.contacts import service as contacts
from zgoda.core.clock import utcnow


def test_campaigns_index_shows_names_and_status(browser: Browser) -> None:
    make_campaign(browser.session, browser.workspace, name="Karta zimowa")
    browser.session.commit()
    html = browser.sign_in(Role.VIEWER).page("/campaigns")
    assert "Karta zimowa" in html and ">draft<" in html
    assert 'id="campaign-new"' not in html
    assert "/sending-settings" not in html  # owner only


def test_new_campaign_form_creates_a_draft_and_names_bad_fields(browser: Browser) -> None:
    contact_list = make_list(browser.session, browser.workspace, name="Newsletter")
    template = make_template(browser.session, browser.workspace, name="Zima")
    browser.session.commit()
    browser.sign_in(Role.OPERATOR)
    form = browser.page("/campaigns/new")
    assert "Newsletter" in form and "Zima" in form and "email_marketing" in form

    fields = {
        "name": "Karta zimowa",
        "purpose": "email_marketing",
        "audience": f"list:{contact_list.id}",
        "template_id": str(template.id),
        "from_name": "Kawiarnia",
        "from_email": "not-an-address",
        "language": "pl",
    }
    bad = browser.post("/campaigns", **fields)
    assert bad.status_code == 422 and 'id="error-from_email"' in bad.text
    for audience in ("list:\u00b2", "list:99999999999999999999"):
        bad = browser.post("/campaigns", **{**fields, "audience": audience, "from_email": "news@kawiarnia.example.pl"})
        assert bad.status_code == 422 and 'id="error-audience"' in bad.text, audience
    created = browser.post("/campaigns", **{**fields, "from_email": "news@kawiarnia.example.pl"})
    assert created.status_code == 200 and "Karta zimowa" in created.text and "Campaign created" in created.text
    assert browser.scoped().scalar(select(Campaign.status).where(Campaign.name == "Karta zimowa")) == "draft"


def test_campaign_page_previews_the_audience_and_sends_once(browser: Browser) -> None:
    make_sendable(browser.session, browser.workspace)
    contact_list = make_list(browser.session, browser.workspace, name="Newsletter")
    session = browser.scoped()
    granted = contacts.upsert_contact(session, contacts.ContactData(email="anna@example.pl")).contact
    record(session, granted, "grant", at=utcnow() - timedelta(days=1))
    other = contacts.upsert_contact(session, contacts.ContactData(email="obcy@example.pl")).contact
    audiences.add_members(session, list_id=contact_list.id, contact_ids=[granted.id, other.id])
    campaign = make_campaign(browser.session, browser.workspace, name="Karta zimowa", list_id=contact_list.id)
    browser.session.commit()
    browser.sign_in(Role.OPERATOR)

    page = browser.page(f"/campaigns/{campaign.id}")
    assert "Karta zimowa" in page and "Newsletter" in page
    assert 'id="preview-total">2<' in page and 'id="preview-eligible">1<' in page
    assert "No consent for this purpose" in page
    assert 'id="send-now"' in page and 'type="datetime-local"' in page and "Europe/Warsaw" in page
    assert 'hx-trigger="every 2s"' not in page  # nothing to poll before sending

    past = browser.post(f"/campaigns/{campaign.id}/send", scheduled_at="2020-01-01T10:00")
    assert past.status_code == 422 and "scheduled_at" in past.text
    sent = browser.post(f"/campaigns/{campaign.id}/send")
    assert sent.status_code == 200 and "Sending has started" in sent.text
    assert 'hx-trigger="every 2s"' in sent.text and 'id="pause"' in sent.text
    again = browser.post(f"/campaigns/{campaign.id}/send")
    assert "already sending" in again.text
    progress = browser.client.get(f"/w/{browser.slug}/campaigns/{campaign.id}/progress")
    assert progress.status_code == 200 and 'id="campaign-status">sending<' in progress.text

    paused = browser.post(f"/campaigns/{campaign.id}/pause")
    assert "Sending is paused" in paused.text and 'id="resume"' in paused.text
    refused = browser.post(f"/campaigns/{campaign.id}/pause")
    assert refused.status_code == 409 and "Only a sending campaign can be paused" in refused.text
    cancelled = browser.post(f"/campaigns/{campaign.id}/cancel")
    assert "is cancelled" in cancelled.text and 'id="campaign-actions"' not in cancelled.text


def test_schedule_reads_the_time_in_the_workspace_zone(browser: Browser) -> None:
    make_sendable(browser.session, browser.workspace)
    campaign = make_campaign(browser.session, browser.workspace, name="Wiosna")
    browser.session.commit()
    zone = ZoneInfo("Europe/Warsaw")
    local = (utcnow().astimezone(zone) + timedelta(days=3)).replace(second=0, microsecond=0, tzinfo=None)
    response = browser.sign_in(Role.OWNER).post(
        f"/campaigns/{campaign.id}/send", scheduled_at=local.strftime("%Y-%m-%dT%H:%M")
    )
    assert response.status_code == 200 and "The campaign is scheduled" in response.text
    assert local.strftime("%Y-%m-%d %H:%M") in response.text  # shown back in workspace time
    stored = browser.scoped().scalar(select(Campaign.scheduled_at).where(Campaign.id == campaign.id))
    assert stored is not None
    if stored.tzinfo is None:
        stored = stored.replace(tzinfo=ZoneInfo("UTC"))
    assert stored == local.replace(tzinfo=zone)


def test_template_editor_shows_errors_next_to_the_part_and_previews_in_a_sandbox(browser: Browser) -> None:
    contact = contacts.upsert_contact(
        browser.scoped(), contacts.ContactData(email="anna@example.pl", first_name="Anna")
    ).contact
    template = make_template(browser.session, browser.workspace, name="Zima")
    browser.session.commit()
    browser.sign_in(Role.OPERATOR)
    index = browser.page("/templates")
    assert "Zima" in index

    for no_contact in ("99999999999999999999", "\u00b2"):  # no contact has such an id: sample values
        assert "<iframe sandbox srcdoc=" in browser.page(f"/templates/{template.id}?contact_id={no_contact}")
    page = browser.page(f"/templates/{template.id}?contact_id={contact.id}")
    assert "<iframe sandbox srcdoc=" in page and "Cześć Anna!" in page
    assert "&lt;h1&gt;" in page  # the html sits escaped inside the srcdoc attribute

    broken = browser.post(
        f"/templates/{template.id}", subject="Zima", html="<p>{% if contact.first_name %}</p>", text=""
    )
    assert broken.status_code == 422 and 'id="error-html"' in broken.text and 'id="error-subject"' not in broken.text
    assert browser.scoped().get(Template, template.id).html != "<p>{% if contact.first_name %}</p>"  # type: ignore[union-attr]

    created = browser.post("/templates", name="Nowy", subject="", html="<p>ok</p>")
    assert created.status_code == 422 and 'id="error-subject"' in created.text
    saved = browser.post(f"/templates/{template.id}", subject="Wiosna {{ workspace.name }}", html="<p>Hej</p>", text="")
    assert saved.status_code == 200 and "Saved." in saved.text and "Wiosna Kawiarnia Zgoda" in saved.text


def test_sending_domains_page_shows_the_dns_record(browser: Browser) -> None:
    domain = make_sending_domain(browser.session, browser.workspace, domain="news.kawiarnia.example.pl")
    browser.session.commit()
    html = browser.sign_in(Role.VIEWER).page("/sending-domains")
    assert "news.kawiarnia.example.pl" in html
    assert f"{domain.selector}._domainkey.news.kawiarnia.example.pl" in html and "v=DKIM1; k=rsa; p=" in html
    assert 'id="domain-create"' not in html

    browser.sign_in(Role.OPERATOR)
    added = browser.post("/sending-domains", domain="mail.kawiarnia.example.pl")
    assert added.status_code == 200 and "._domainkey.mail.kawiarnia.example.pl" in added.text
    bad = browser.post("/sending-domains", domain="nie domena")
    assert bad.status_code == 422 and "is not a domain name" in bad.text


def test_sending_settings_page_explains_and_saves_the_soft_opt_in(browser: Browser) -> None:
    html = browser.sign_in(Role.OWNER).page("/sending-settings")
    assert "soft opt-in" in html and "Polish law" in html and "checked" not in html
    saved = browser.post("/sending-settings", soft_opt_in="on", rate_per_second="5")
    assert saved.status_code == 200 and "Saved." in saved.text and "checked" in saved.text
    workspace = browser.scoped().get(Workspace, browser.workspace.id)
    assert workspace is not None
    browser.session.refresh(workspace)
    assert workspace.settings["sending"] == {"soft_opt_in": True, "rate_per_second": 5}
    assert browser.scoped().scalar(select(AuditEntry.id).where(AuditEntry.action == "workspace.sending_settings"))
    bad = browser.post("/sending-settings", rate_per_second="lots")
    assert bad.status_code == 422 and "rate_per_second" in bad.text

    browser.sign_in(Role.OPERATOR)
    assert browser.client.get(f"/w/{browser.slug}/sending-settings").status_code == 403


def test_campaign_page_of_another_workspace_is_not_found(browser: Browser, session: Session) -> None:
    theirs = make_campaign(session, make_workspace(session), name="Their campaign")
    session.commit()
    browser.sign_in(Role.OWNER)
    response = browser.client.get(f"/w/{browser.slug}/campaigns/{theirs.id}")
    assert response.status_code == 404 and "Their campaign" not in response.text
