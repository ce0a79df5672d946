"""The staff feedback API: the suppression list, a campaign's feedback figures, a contact's messages, the
soft-bounce rule. Other workspaces' objects answer 404."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.support.api import Api, error_field
from tests.support.campaigns import make_campaign
from tests.support.consent import record
from tests.support.factories import as_system, make_workspace
from zgoda.accounts.models import Workspace
from zgoda.accounts.roles import Role
from zgoda.audit.models import AuditEntry
from zgoda.campaigns.links import new_send_ref
from zgoda.campaigns.models import Campaign, Send, SendStatus
from zgoda.contacts import service as contacts
from zgoda.contacts.models import Contact
from zgoda.core.clock import utcnow
from zgoda.core.tenancy import unscoped
from zgoda.feedback import suppression
from zgoda.feedback.models import SendEvent, Suppression
from zgoda.feedback.service import feedback_rules

_keys = itertools.count(1)


@pytest.fixture
def api(client: TestClient, session: Session) -> Api:
    return Api(client, session)


def _put(api: Api, path: str, role: Role = Role.OWNER, **kwargs: Any) -> Any:
    return api.client.put("/api/v1" + path, headers=api.headers(role), **kwargs)


def make_send(
    session: Session,
    workspace: Workspace,
    campaign: Campaign,
    contact: Contact,
    *,
    status: str = SendStatus.SENT,
    sent_at: datetime | None = None,
    reason: str | None = None,
) -> Send:
    """A send row as the sending loop leaves it."""
    as_system(session, workspace)
    send = Send(
        campaign_id=campaign.id,
        contact_id=contact.id,
        ref=new_send_ref() if status == SendStatus.SENT else None,
        status=status,
        reason=reason,
        sent_at=(sent_at or utcnow()) if status == SendStatus.SENT else None,
    )
    session.add(send)
    session.flush()
    return send


def make_event(session: Session, workspace: Workspace, send: Send, kind: str, **fields: Any) -> SendEvent:
    """A stored send event (as the intake writes it)."""
    as_system(session, workspace)
    fields.setdefault("occurred_at", utcnow())
    fields.setdefault("detail", {"via": "mailbox"})
    event = SendEvent(
        send_id=send.id, contact_id=send.contact_id, kind=kind, dedupe_key=f"test:{next(_keys)}", **fields
    )
    session.add(event)
    session.flush()
    return event


def _contact(session: Session, workspace: Workspace, email: str) -> Contact:
    as_system(session, workspace)
    return contacts.upsert_contact(session, contacts.ContactData(email=email)).contact


def _other_suppression(session: Session) -> int:
    other = make_workspace(session)
    as_system(session, other)
    entry, _ = suppression.suppress(session, address="someone@example.com", reason="operator")
    session.commit()
    return entry.id


# --- suppressions -----------------------------------------------------------------------------


def test_add_search_in_any_case_and_remove(api: Api) -> None:
    response = api.post(
        "/suppressions", json={"address": "Jan.Kowalski@Example.com", "detail": "asked by phone"}, role=Role.OPERATOR
    )
    assert response.status_code == 201, response.text
    entry = response.json()
    assert entry["hint"] == "j***@example.com" and entry["reason"] == "operator"
    assert entry["detail"] == "asked by phone" and entry["created_by"] == "token:operator"
    assert "kowalski" not in response.text.lower()  # never the address
    again = api.post("/suppressions", json={"address": "jan.kowalski@example.com", "reason": "complaint"})
    assert again.status_code == 200 and again.json()["id"] == entry["id"] and again.json()["reason"] == "operator"
    api.post("/suppressions", json={"address": "other@example.com", "reason": "unsubscribe"})

    found = api.get("/suppressions", params={"address": "JAN.KOWALSKI@EXAMPLE.COM"}, role=Role.VIEWER).json()
    assert found["total"] == 1 and [e["id"] for e in found["items"]] == [entry["id"]]
    assert api.get("/suppressions", params={"address": "nobody@example.com"}).json()["total"] == 0
    by_reason = api.get("/suppressions", params={"reason": "unsubscribe"}).json()
    assert [e["hint"] for e in by_reason["items"]] == ["o***@example.com"]
    everything = api.get("/suppressions", params={"limit": 1, "offset": 1}).json()
    assert everything["total"] == 2 and [e["id"] for e in everything["items"]] == [entry["id"]]  # newest first
    assert api.get(f"/suppressions/{entry['id']}").json()["hint"] == "j***@example.com"

    removed = api.post(f"/suppressions/{entry['id']}:remove", json={"note": "consented again"}, role=Role.DPO)
    assert removed.status_code == 204, removed.text
    assert api.get(f"/suppressions/{entry['id']}").status_code == 404
    assert api.audit_actions()[-3:] == ["suppression.add", "suppression.add", "suppression.remove"]


def test_bad_input_names_the_field(api: Api) -> None:
    assert error_field(api.post("/suppressions", json={"address": "not an address"})) == "address"
    assert error_field(api.post("/suppressions", json={"address": "a@example.com", "reason": "erasure"})) == "reason"
    assert error_field(api.post("/suppressions", json={"address": "a@example.com", "colour": "red"})) == "colour"
    assert error_field(api.get("/suppressions", params={"address": "nope"})) == "address"
    assert error_field(api.get("/suppressions", params={"reason": "bored"})) == "reason"
    assert error_field(api.get("/suppressions", params={"limit": 0})) == "limit"
    response = api.post("/suppressions", json={"address": "a@example.com"}, role=Role.VIEWER)
    assert response.status_code == 403


def test_a_complaint_comes_off_only_after_a_fresh_consent(api: Api) -> None:
    added = api.post("/suppressions", json={"address": "anna@example.pl", "reason": "complaint"}).json()
    refused = api.post(f"/suppressions/{added['id']}:remove", json={})
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "fresh consent" in refused.json()["detail"] and error_field(refused) == "suppression_id"
    assert api.get(f"/suppressions/{added['id']}").status_code == 200

    contact = _contact(api.session, api.workspace, "anna@example.pl")
    record(api.scoped(), contact, "grant")
    api.session.commit()
    assert api.post(f"/suppressions/{added['id']}:remove").status_code == 204


def test_an_erased_subjects_entry_stays(api: Api) -> None:
    as_system(api.session, api.workspace)
    entry, _ = suppression.suppress(api.session, address="gone@example.pl", reason="erasure", hint=False)
    api.session.commit()
    assert api.get(f"/suppressions/{entry.id}").json()["hint"] is None
    assert api.post(f"/suppressions/{entry.id}:remove", json={"note": "x"}).status_code == 409


def test_another_workspaces_suppression_is_not_found(api: Api, session: Session) -> None:
    other_id = _other_suppression(session)
    assert api.get(f"/suppressions/{other_id}").status_code == 404
    response = api.post(f"/suppressions/{other_id}:remove", json={"note": "x"})
    assert response.status_code == 404
    bad_body = api.post(f"/suppressions/{other_id}:remove", json={"unknown": 1})
    assert bad_body.status_code == 404  # the id is checked before the body
    assert api.get("/suppressions").json()["total"] == 0
    with_address = api.get("/suppressions", params={"address": "someone@example.com"}).json()
    assert with_address["total"] == 0
    with unscoped(session):
        assert session.scalar(select(Suppression.id).where(Suppression.id == other_id)) == other_id  # still there


# --- campaign figures -------------------------------------------------------------------------


def test_campaign_feedback_counts_sends_and_gives_rates(api: Api) -> None:
    session, workspace = api.session, api.workspace
    campaign = make_campaign(session, workspace)
    people = [_contact(session, workspace, f"k{n}@example.pl") for n in range(5)]
    sends = [make_send(session, workspace, campaign, person) for person in people[:4]]
    make_send(session, workspace, campaign, people[4], status=SendStatus.REFUSED, reason="no_consent")
    for send in sends[:2]:
        make_event(session, workspace, send, "delivery")
    make_event(session, workspace, sends[2], "bounce", bounce_class="hard", reason="user_unknown", status="5.1.1")
    make_event(session, workspace, sends[3], "bounce", bounce_class="soft", reason="mailbox_full", status="4.2.2")
    make_event(session, workspace, sends[3], "bounce", bounce_class="soft", reason="mailbox_full", status="4.2.2")
    make_event(session, workspace, sends[0], "complaint")
    make_event(session, workspace, sends[1], "unsubscribe")
    make_event(session, workspace, sends[0], "open")
    make_event(session, workspace, sends[0], "open")
    make_event(session, workspace, sends[1], "click")
    session.commit()

    figures = api.get(f"/campaigns/{campaign.id}/feedback", role=Role.VIEWER).json()
    assert figures["sent"] == 4 and figures["delivered"] == 2
    assert figures["bounced"] == {"hard": 1, "soft": 1}  # two soft bounces of one send: one send
    assert figures["bounce_reasons"] == {"hard:user_unknown": 1, "soft:mailbox_full": 1}
    assert (figures["complaints"], figures["unsubscribes"], figures["opens"], figures["clicks"]) == (1, 1, 1, 1)
    assert figures["rates"] == {"bounce_rate": 0.5, "complaint_rate": 0.25, "unsubscribe_rate": 0.25}


def test_campaign_feedback_before_sending_has_no_rates(api: Api, session: Session) -> None:
    campaign = make_campaign(session, api.workspace)
    session.commit()
    figures = api.get(f"/campaigns/{campaign.id}/feedback").json()
    assert figures["sent"] == 0 and figures["rates"]["bounce_rate"] is None
    other = make_campaign(session, make_workspace(session))
    session.commit()
    assert api.get(f"/campaigns/{other.id}/feedback").status_code == 404


# --- a contact's messages ---------------------------------------------------------------------


def test_contact_events_newest_first_with_their_events(api: Api) -> None:
    session, workspace = api.session, api.workspace
    contact = _contact(session, workspace, "ola@example.pl")
    older = make_campaign(session, workspace, name="Jesień")
    newer = make_campaign(session, workspace, name="Zima")
    refused_campaign = make_campaign(session, workspace, name="Wiosna")
    first = make_send(session, workspace, older, contact, sent_at=utcnow() - timedelta(days=10))
    second = make_send(session, workspace, newer, contact, sent_at=utcnow() - timedelta(days=1))
    make_send(session, workspace, refused_campaign, contact, status=SendStatus.REFUSED, reason="suppressed")
    make_event(session, workspace, first, "delivery", occurred_at=utcnow() - timedelta(days=10))
    make_event(
        session,
        workspace,
        second,
        "bounce",
        bounce_class="soft",
        reason="mailbox_full",
        status="4.2.2",
        occurred_at=utcnow() - timedelta(hours=20),
    )
    make_event(session, workspace, second, "open", occurred_at=utcnow() - timedelta(hours=2), detail={"via": "pixel"})
    someone_else = _contact(session, workspace, "inny@example.pl")
    make_send(session, workspace, older, someone_else)
    session.commit()

    page = api.get(f"/contacts/{contact.id}/events", role=Role.VIEWER).json()
    assert page["total"] == 3
    assert [(s["campaign_name"], s["status"]) for s in page["items"]] == [
        ("Wiosna", "refused"),
        ("Zima", "sent"),
        ("Jesień", "sent"),
    ]
    assert page["items"][0]["reason"] == "suppressed" and page["items"][0]["sent_at"] is None
    zima = page["items"][1]
    assert [(e["kind"], e["via"]) for e in zima["events"]] == [("open", "pixel"), ("bounce", "mailbox")]
    bounce = zima["events"][1]
    assert (bounce["bounce_class"], bounce["reason"], bounce["status"]) == ("soft", "mailbox_full", "4.2.2")
    paged = api.get(f"/contacts/{contact.id}/events", params={"limit": 1, "offset": 2}).json()
    assert [s["campaign_name"] for s in paged["items"]] == ["Jesień"] and paged["total"] == 3
    assert error_field(api.get(f"/contacts/{contact.id}/events", params={"limit": 500})) == "limit"

    other = make_workspace(session)
    stranger = _contact(session, other, "ola@example.pl")
    session.commit()
    assert api.get(f"/contacts/{stranger.id}/events").status_code == 404


# --- settings ---------------------------------------------------------------------------------


def test_feedback_settings_owner_only_validated_and_audited(api: Api) -> None:
    assert api.get("/feedback-settings").json() == {"soft_bounce_limit": 3, "soft_bounce_days": 30}
    assert api.get("/feedback-settings", role=Role.OPERATOR).status_code == 403
    assert (
        _put(
            api, "/feedback-settings", role=Role.OPERATOR, json={"soft_bounce_limit": 5, "soft_bounce_days": 10}
        ).status_code
        == 403
    )
    for body, field in (
        ({"soft_bounce_limit": 0, "soft_bounce_days": 10}, "soft_bounce_limit"),
        ({"soft_bounce_limit": 21, "soft_bounce_days": 10}, "soft_bounce_limit"),
        ({"soft_bounce_limit": 5, "soft_bounce_days": 366}, "soft_bounce_days"),
        ({"soft_bounce_limit": 5}, "soft_bounce_days"),
    ):
        assert error_field(_put(api, "/feedback-settings", json=body)) == field

    response = _put(api, "/feedback-settings", json={"soft_bounce_limit": 5, "soft_bounce_days": 10})
    assert response.status_code == 200 and response.json() == {"soft_bounce_limit": 5, "soft_bounce_days": 10}
    session = api.scoped()
    session.refresh(api.workspace)
    assert feedback_rules(api.workspace) == (5, 10)
    entry = session.scalars(
        select(AuditEntry).where(AuditEntry.action == "workspace.feedback_settings").order_by(AuditEntry.seq)
    ).one()
    assert entry.summary == {
        "before": {"soft_bounce_limit": 3, "soft_bounce_days": 30},
        "after": {"soft_bounce_limit": 5, "soft_bounce_days": 10},
    }
    _put(api, "/feedback-settings", json={"soft_bounce_limit": 5, "soft_bounce_days": 10})
    assert api.audit_actions().count("workspace.feedback_settings") == 1  # no change, no entry
