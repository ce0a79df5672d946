"""Helpers for consent tests: a workspace with a contact, events recorded through the service."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from tests.support.factories import as_system, make_workspace
from zgoda.accounts.models import Workspace
from zgoda.consent import ledger, purposes
from zgoda.consent.models import ConsentEvent, Purpose
from zgoda.contacts import service as contacts
from zgoda.contacts.models import Contact


def workspace_with_contact(session: Session, email: str = "jan.kowalski@example.pl") -> tuple[Workspace, Contact]:
    workspace = make_workspace(session)
    as_system(session, workspace)
    contact = contacts.upsert_contact(session, contacts.ContactData(email=email, first_name="Jan")).contact
    return workspace, contact


def record(
    session: Session,
    contact: Contact,
    event_type: str,
    *,
    purpose: str = "email_marketing",
    at: datetime | None = None,
    method: str = "api",
    legal_basis: str = "consent",
    requires_confirmation: bool = False,
    evidence: ledger.Evidence | None = None,
) -> ConsentEvent:
    target: Purpose = purposes.purpose_by_key(session, purpose)
    return ledger.record_event(
        session,
        ledger.NewEvent(
            contact=contact,
            purpose=target,
            event_type=event_type,
            method=method,
            legal_basis=legal_basis,
            occurred_at=at,
            requires_confirmation=requires_confirmation,
            evidence=evidence or ledger.Evidence(),
        ),
    )
