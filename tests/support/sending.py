"""A workspace ready to send: controller identity, a list whose members cover the gate's reasons, a template."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.support.consent import record
from tests.support.factories import as_system, make_workspace
from zgoda.accounts import service as accounts
from zgoda.accounts.models import Workspace
from zgoda.audiences import service as audiences
from zgoda.campaigns import service as campaigns
from zgoda.campaigns.models import Campaign, Send
from zgoda.contacts import service as contacts
from zgoda.contacts.models import Contact
from zgoda.core.clock import utcnow
from zgoda.core.db import Database
from zgoda.core.tenancy import Actor, bind_scope, unscoped

CONTROLLER = {
    "legal_name": "Kawiarnia Pod Zegarem sp. z o.o.",
    "postal_address": {"street": "ul. Długa 5", "postal_code": "00-238", "city": "Warszawa", "country": "PL"},
    "email": "biuro@kawiarnia.example.pl",
}
HTML = """<html><head><style>p { color: #333; }</style></head>
<body><h1>Cześć {{ contact.first_name | default('') }}!</h1>
<p>Nowa karta zimowa w {{ workspace.name }}.</p></body></html>"""


@dataclass
class SendingSetup:
    workspace: Workspace
    campaign: Campaign
    eligible: list[Contact] = field(default_factory=list)
    refused: dict[str, Contact] = field(default_factory=dict)


def sending_setup(session: Session, *, eligible: int = 3, controller: bool = True) -> SendingSetup:
    """``eligible`` contacts with consent, plus one withdrawn and one without consent, on one list."""
    workspace = make_workspace(session)
    as_system(session, workspace)
    if controller:
        accounts.update_workspace_settings(session, workspace=workspace, controller=CONTROLLER)
    setup = SendingSetup(workspace=workspace, campaign=None)  # type: ignore[arg-type]
    for number in range(eligible):
        data = contacts.ContactData(email=f"klient{number}@example.pl", first_name=f"Anna{number}")
        contact = contacts.upsert_contact(session, data).contact
        record(session, contact, "grant", at=utcnow() - timedelta(days=1))
        setup.eligible.append(contact)
    withdrawn = contacts.upsert_contact(session, contacts.ContactData(email="wypisany@example.pl")).contact
    record(session, withdrawn, "grant", at=utcnow() - timedelta(days=2))
    record(session, withdrawn, "withdraw", at=utcnow() - timedelta(days=1))
    setup.refused["consent_withdrawn"] = withdrawn
    setup.refused["no_consent"] = contacts.upsert_contact(
        session, contacts.ContactData(email="obcy@example.pl")
    ).contact
    contact_list = audiences.create_list(session, name="Newsletter")
    members = [c.id for c in setup.eligible] + [c.id for c in setup.refused.values()]
    audiences.add_members(session, list_id=contact_list.id, contact_ids=members)
    template = campaigns.create_template(session, name="Zima", subject="Zima w {{ workspace.name }}", html=HTML)
    setup.campaign = campaigns.create_campaign(
        session,
        name="Karta zimowa",
        purpose_key="email_marketing",
        template_id=template.id,
        from_name="Kawiarnia",
        from_email="news@kawiarnia.example.pl",
        list_id=contact_list.id,
        language="pl",
    )
    session.flush()
    return setup


def delivered_counts(maildir: Path) -> Counter[str]:
    """How many messages the sink's Maildir holds per recipient (its ``Delivered-To`` header)."""
    delivered: Counter[str] = Counter()
    for path in (maildir / "new").iterdir():
        for line in path.read_bytes().split(b"\r\n"):
            if line.startswith(b"Delivered-To: "):
                delivered[line.removeprefix(b"Delivered-To: ").decode()] += 1
            if not line:
                break
    return delivered


def send_status_counts(database: Database, campaign_id: int) -> dict[str, int]:
    """How many of a campaign's send rows are in each status, as committed (read in a transaction of its own)."""
    with database.transaction() as session:
        bind_scope(session, workspace_id=None, actor=Actor.system("test"))
        with unscoped(session):
            statement = select(Send.status, func.count()).where(Send.campaign_id == campaign_id).group_by(Send.status)
            return dict(session.execute(statement).all())
