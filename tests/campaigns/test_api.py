"""The campaigns JSON API: templates, campaigns and their state changes, sending domains, sending settings.

Nothing here waits for delivery (there is no SMTP server): sends are checked by the API's answers and
the campaign's status; the sending loop is tested in test_sending.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.support.api import Api, error_field
from tests.support.campaigns import HTML, make_campaign, make_list, make_sendable, make_template
from tests.support.factories import as_system, make_workspace
from zgoda.accounts.models import Workspace
from zgoda.accounts.roles import Role
from zgoda.audit.models import AuditEntry
from zgoda.campaigns.models import Campaign
from zgoda.contacts import service as contacts
from zgoda.core.clock import utcnow


@pytest.fixture
def api(client: TestClient, session: Session) -> Api:
    return Api(client, session)


def _put(api: Api, path: str, role: Role = Role.OWNER, **kwargs: Any) -> Any:
    return api.client.put("/api/v1" + path, headers=api.headers(role), **kwargs)


def _campaign_body(api: Api, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": "Karta zimowa",
        "purpose": "email_marketing",
        "list_id": make_list(api.session, api.workspace).id,
        "template_id": make_template(api.session, api.workspace).id,
        "from_name": "Kawiarnia",
        "from_email": "news@kawiarnia.example.pl",
        "reply_to": "biuro@kawiarnia.example.pl",
        "language": "pl",
    }
    api.session.commit()
    return {**body, **overrides}


def _draft(api: Api, *, sendable: bool = True) -> int:
    if sendable:
        make_sendable(api.session, api.workspace)
    campaign = make_campaign(api.session, api.workspace)
    api.session.commit()
    return campaign.id


# --- templates --------------------------------------------------------------------------------


def test_template_create_update_and_preview_for_a_contact(api: Api) -> None:
    contact = contacts.upsert_contact(
        api.scoped(), contacts.ContactData(email="anna@example.pl", first_name="Anna")
    ).contact
    api.session.commit()
    created = api.post(
        "/templates", Role.OPERATOR, json={"name": "Zima", "subject": "Zima w {{ workspace.name }}", "html": HTML}
    )
    assert created.status_code == 201, created.text
    template = created.json()
    assert template["name"] == "Zima" and template["text"] is None

    preview = api.get(f"/templates/{template['id']}/preview", Role.VIEWER, params={"contact_id": contact.id})
    assert preview.status_code == 200, preview.text
    parts = preview.json()
    assert parts["subject"] == f"Zima w {api.workspace.name}"
    assert "Cześć Anna!" in parts["html"] and "Cześć Anna!" in parts["text"]
    sample = api.get(f"/templates/{template['id']}/preview").json()
    assert "Cześć Jan!" in sample["html"]

    updated = _put(api, f"/templates/{template['id']}", Role.OPERATOR, json={"subject": "Wiosna"})
    assert updated.status_code == 200 and updated.json()["subject"] == "Wiosna"
    assert updated.json()["html"] == HTML
    assert [t["name"] for t in api.get("/templates").json()] == ["Zima"]
    assert {"template.create", "template.update"} <= set(api.audit_actions())


@pytest.mark.parametrize(
    ("part", "body"),
    [
        ("html", {"subject": "Hej", "html": "<p>{% if contact.first_name %}no end</p>"}),
        ("subject", {"subject": "Hej {{ contact.first_name ", "html": "<p>ok</p>"}),
        ("text", {"subject": "Hej", "html": "<p>ok</p>", "text": "{{ contact.nope.__class__ }}"}),
    ],
)
def test_a_template_that_does_not_compile_is_refused_naming_the_part(api: Api, part: str, body: dict[str, str]) -> None:
    response = api.post("/templates", json={"name": "Zepsuty", **body})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert error_field(response) == part
    assert api.get("/templates").json() == []


def test_a_broken_update_names_the_part_and_keeps_the_template(api: Api) -> None:
    template = make_template(api.session, api.workspace, name="Zima")
    api.session.commit()
    response = _put(api, f"/templates/{template.id}", json={"html": "<p>{{ contact.first_name }</p>"})
    assert response.status_code == 422 and error_field(response) == "html"
    assert api.get(f"/templates/{template.id}").json()["html"] == HTML


# --- campaigns --------------------------------------------------------------------------------


def test_create_and_read_a_campaign_with_its_progress(api: Api) -> None:
    body = _campaign_body(api)
    created = api.post("/campaigns", Role.OPERATOR, json=body)
    assert created.status_code == 201, created.text
    campaign = created.json()
    assert (campaign["status"], campaign["purpose"], campaign["list_id"]) == (
        "draft",
        "email_marketing",
        body["list_id"],
    )
    assert campaign["progress"]["total"] == 0 and campaign["progress"]["status"] == "draft"
    assert api.get(f"/campaigns/{campaign['id']}", Role.VIEWER).json()["name"] == "Karta zimowa"
    assert [c["id"] for c in api.get("/campaigns").json()] == [campaign["id"]]
    progress = api.get(f"/campaigns/{campaign['id']}/progress").json()
    assert progress["sent"] == 0 and progress["refused_by_reason"] == {} and progress["pending"] == 0

    duplicate = api.post("/campaigns", json=_campaign_body(api))
    assert duplicate.status_code == 409 and error_field(duplicate) == "name"
    assert api.post("/campaigns", Role.VIEWER, json=_campaign_body(api, name="X")).status_code == 403


def test_campaign_input_errors_name_the_field(api: Api, session: Session) -> None:
    theirs = make_list(session, make_workspace(session), name="Their list")
    session.commit()
    other = api.post("/campaigns", json=_campaign_body(api, list_id=theirs.id))
    assert other.status_code in (404, 422) and error_field(other) == "list_id"
    assert "Their list" not in other.text

    both = api.post("/campaigns", json=_campaign_body(api, name="Oba", segment_id=1))
    assert both.status_code == 422 and error_field(both) == "list_id"
    sms = api.post("/campaigns", json=_campaign_body(api, name="SMS", purpose="sms_marketing"))
    assert sms.status_code == 422 and error_field(sms) == "purpose"
    address = api.post("/campaigns", json=_campaign_body(api, name="Adres", from_email="not-an-address"))
    assert address.status_code == 422 and error_field(address) == "from_email"
    language = api.post("/campaigns", json=_campaign_body(api, name="Język", language="de"))
    assert language.status_code == 422 and error_field(language) == "language"


def test_send_twice_answers_already_sending(api: Api) -> None:
    campaign_id = _draft(api)
    first = api.post(f"/campaigns/{campaign_id}/send", Role.OPERATOR, json={})
    assert first.status_code == 202, first.text
    assert first.json()["action"] == "started" and first.json()["campaign"]["status"] == "sending"

    second = api.post(f"/campaigns/{campaign_id}/send", Role.OPERATOR)
    assert second.status_code == 200, second.text
    assert second.json()["action"] == "already_sending"
    assert "already" in second.json()["message"]
    assert api.get(f"/campaigns/{campaign_id}").json()["status"] == "sending"
    assert api.audit_actions().count("campaign.start") == 1


def test_send_without_the_controller_identity_is_refused(api: Api) -> None:
    campaign_id = _draft(api, sendable=False)
    response = api.post(f"/campaigns/{campaign_id}/send", json={})
    assert response.status_code == 422 and error_field(response) == "controller"
    assert api.get(f"/campaigns/{campaign_id}").json()["status"] == "draft"


def test_schedule_in_the_past_is_refused_and_naive_times_are_workspace_time(api: Api) -> None:
    campaign_id = _draft(api)
    past = api.post(f"/campaigns/{campaign_id}/send", json={"scheduled_at": "2020-01-01T10:00:00"})
    assert past.status_code == 422 and error_field(past) == "scheduled_at"
    beyond = api.post(f"/campaigns/{campaign_id}/send", json={"scheduled_at": "9999-12-31T23:59:59-07:30"})
    assert beyond.status_code == 422 and error_field(beyond) == "scheduled_at"  # later than any UTC time
    assert api.get(f"/campaigns/{campaign_id}").json()["status"] == "draft"

    zone = ZoneInfo(api.session.get(Workspace, api.workspace.id).time_zone)  # type: ignore[union-attr]
    local = (utcnow().astimezone(zone) + timedelta(days=2)).replace(tzinfo=None, microsecond=0)
    scheduled = api.post(f"/campaigns/{campaign_id}/send", json={"scheduled_at": local.isoformat()})
    assert scheduled.status_code == 202, scheduled.text
    assert scheduled.json()["action"] == "scheduled"
    stored = datetime.fromisoformat(scheduled.json()["campaign"]["scheduled_at"])
    if stored.tzinfo is None:  # SQLite keeps UTC without the offset
        stored = stored.replace(tzinfo=ZoneInfo("UTC"))
    assert stored == local.replace(tzinfo=zone)
    assert api.get(f"/campaigns/{campaign_id}").json()["status"] == "scheduled"


def test_pause_resume_cancel_and_their_state_errors(api: Api) -> None:
    campaign_id = _draft(api)
    for action in ("pause", "resume"):
        refused = api.post(f"/campaigns/{campaign_id}/{action}", Role.OPERATOR)
        assert refused.status_code == 409, (action, refused.text)
        assert error_field(refused) == "status"

    api.post(f"/campaigns/{campaign_id}/send")
    paused = api.post(f"/campaigns/{campaign_id}/pause", Role.OPERATOR)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert api.post(f"/campaigns/{campaign_id}/pause").status_code == 409
    resumed = api.post(f"/campaigns/{campaign_id}/resume", Role.OPERATOR)
    assert resumed.status_code == 200 and resumed.json()["status"] == "sending"

    cancelled = api.post(f"/campaigns/{campaign_id}/cancel", Role.OPERATOR)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = api.post(f"/campaigns/{campaign_id}/cancel")
    assert again.status_code == 409 and error_field(again) == "status"
    resend = api.post(f"/campaigns/{campaign_id}/send")
    assert resend.status_code == 409
    assert api.post(f"/campaigns/{campaign_id}/pause", Role.VIEWER).status_code == 403


def test_another_workspaces_campaign_is_not_found(api: Api, session: Session) -> None:
    theirs = make_workspace(session)
    make_sendable(session, theirs)
    other = make_campaign(session, theirs, name="Their campaign")
    session.commit()
    for path in (f"/campaigns/{other.id}", f"/campaigns/{other.id}/progress"):
        response = api.get(path)
        assert response.status_code == 404 and "Their campaign" not in response.text
    for action in ("send", "pause", "resume", "cancel"):
        assert api.post(f"/campaigns/{other.id}/{action}", json={}).status_code == 404
    as_system(session, theirs)
    assert session.scalar(select(Campaign.status).where(Campaign.id == other.id)) == "draft"


# --- sending domains and settings -------------------------------------------------------------


def test_a_sending_domain_gets_a_dkim_key_and_its_dns_record(api: Api) -> None:
    created = api.post("/sending-domains", Role.OPERATOR, json={"domain": "News.Kawiarnia.example.PL"})
    assert created.status_code == 201, created.text
    domain = created.json()
    assert domain["domain"] == "news.kawiarnia.example.pl"
    assert domain["dns"]["type"] == "TXT"
    assert domain["dns"]["name"] == f"{domain['selector']}._domainkey.news.kawiarnia.example.pl"
    assert domain["dns"]["value"].startswith("v=DKIM1; k=rsa; p=")
    assert "PRIVATE" not in created.text
    assert api.get(f"/sending-domains/{domain['id']}", Role.VIEWER).json() == domain
    assert [d["id"] for d in api.get("/sending-domains").json()] == [domain["id"]]

    duplicate = api.post("/sending-domains", json={"domain": "news.kawiarnia.example.pl"})
    assert duplicate.status_code == 409 and error_field(duplicate) == "domain"
    bad = api.post("/sending-domains", json={"domain": "not a domain"})
    assert bad.status_code == 422 and error_field(bad) == "domain"
    assert api.post("/sending-domains", Role.VIEWER, json={"domain": "x.example.pl"}).status_code == 403


def test_sending_settings_default_off_owner_only_and_audited(api: Api) -> None:
    assert api.get("/sending-settings").json() == {"soft_opt_in": False, "rate_per_second": None}
    assert api.get("/sending-settings", Role.OPERATOR).status_code == 403
    assert _put(api, "/sending-settings", Role.OPERATOR, json={"soft_opt_in": True}).status_code == 403

    saved = _put(api, "/sending-settings", json={"soft_opt_in": True, "rate_per_second": 20})
    assert saved.status_code == 200, saved.text
    assert saved.json() == {"soft_opt_in": True, "rate_per_second": 20}
    assert api.get("/sending-settings").json() == {"soft_opt_in": True, "rate_per_second": 20}
    workspace = api.scoped().get(Workspace, api.workspace.id)
    assert workspace is not None
    api.session.refresh(workspace)
    assert workspace.settings["sending"] == {"soft_opt_in": True, "rate_per_second": 20}

    entry = api.scoped().scalars(select(AuditEntry).where(AuditEntry.action == "workspace.sending_settings")).one()
    assert entry.summary == {
        "before": {"soft_opt_in": False, "rate_per_second": None},
        "after": {"soft_opt_in": True, "rate_per_second": 20},
    }

    bad = _put(api, "/sending-settings", json={"soft_opt_in": False, "rate_per_second": 0})
    assert bad.status_code == 422 and error_field(bad) == "rate_per_second"
    off = _put(api, "/sending-settings", json={})
    assert off.json() == {"soft_opt_in": False, "rate_per_second": None}
