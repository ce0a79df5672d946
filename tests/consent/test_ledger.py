"""Recording consent events: the chain, the state table, late arrivals, evidence, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.support.consent import record, workspace_with_contact
from tests.support.factories import as_system
from zgoda.consent import ledger, purposes
from zgoda.consent.models import ConsentEvidence, ConsentState
from zgoda.consent.verify import verify_ledger_chains, verify_states
from zgoda.contacts import service as contacts
from zgoda.core.clock import utcnow
from zgoda.core.errors import InvalidInput


def _state(session: Session, contact_id: int) -> str:
    return session.scalars(select(ConsentState.status).where(ConsentState.contact_id == contact_id)).one()


def test_grant_then_withdraw(session: Session) -> None:
    _, contact = workspace_with_contact(session)
    now = utcnow()
    record(session, contact, "grant", at=now - timedelta(days=2))
    assert _state(session, contact.id) == "granted"
    withdrawal = record(session, contact, "withdraw", at=now - timedelta(days=1))
    assert _state(session, contact.id) == "withdrawn"
    assert session.scalars(select(ConsentState.event_id)).one() == withdrawal.id


def test_a_late_grant_does_not_override_a_newer_withdrawal(session: Session) -> None:
    _, contact = workspace_with_contact(session)
    now = utcnow()
    record(session, contact, "withdraw", at=now - timedelta(hours=1))
    record(session, contact, "grant", at=now - timedelta(days=3))  # arrives late, occurred earlier
    assert _state(session, contact.id) == "withdrawn"


def test_a_withdrawal_at_the_same_instant_wins(session: Session) -> None:
    _, contact = workspace_with_contact(session)
    moment = utcnow() - timedelta(minutes=10)
    record(session, contact, "withdraw", at=moment)
    record(session, contact, "grant", at=moment)
    assert _state(session, contact.id) == "withdrawn"


def test_double_opt_in_is_pending_until_confirmed(session: Session) -> None:
    _, contact = workspace_with_contact(session)
    record(session, contact, "grant", method="web_form", requires_confirmation=True, at=utcnow() - timedelta(hours=2))
    assert _state(session, contact.id) == "pending"
    record(session, contact, "confirm", method="double_opt_in", at=utcnow() - timedelta(hours=1))
    assert _state(session, contact.id) == "granted"


def test_state_at_answers_for_past_moments(session: Session) -> None:
    _, contact = workspace_with_contact(session)
    now = utcnow()
    record(session, contact, "grant", at=now - timedelta(days=10))
    record(session, contact, "withdraw", at=now - timedelta(days=5))
    purpose = purposes.purpose_by_key(session, "email_marketing")
    assert ledger.state_at(session, contact=contact, purpose=purpose, moment=now - timedelta(days=11)) == "none"
    assert ledger.state_at(session, contact=contact, purpose=purpose, moment=now - timedelta(days=7)) == "granted"
    assert ledger.state_at(session, contact=contact, purpose=purpose, moment=now) == "withdrawn"


def test_consent_expires_after_the_purposes_validity(session: Session) -> None:
    _, contact = workspace_with_contact(session)
    purpose = purposes.purpose_by_key(session, "email_marketing")
    purposes.update_purpose(session, purpose_id=purpose.id, validity_days=365)
    now = utcnow()
    record(session, contact, "grant", at=now - timedelta(days=400))
    state = session.scalars(select(ConsentState)).one()
    assert state.expires_at == now - timedelta(days=35)
    assert ledger.state_at(session, contact=contact, purpose=purpose, moment=now) == "expired"
    assert ledger.state_at(session, contact=contact, purpose=purpose, moment=now - timedelta(days=100)) == "granted"


def test_a_withdrawal_for_a_contact_who_never_consented_is_recorded(session: Session) -> None:
    _, contact = workspace_with_contact(session)
    record(session, contact, "withdraw")
    assert _state(session, contact.id) == "withdrawn"


def test_evidence_is_stored_apart_and_hashed_salted(session: Session) -> None:
    workspace, contact = workspace_with_contact(session)
    evidence = ledger.Evidence(ip="203.0.113.7", user_agent="Mozilla/5.0", page_url="https://sklep.example.pl/zapis")
    event = record(session, contact, "grant", method="web_form", evidence=evidence)
    stored = session.get(ConsentEvidence, event.id)
    assert stored is not None and stored.ip == "203.0.113.7"
    assert event.evidence_digest == ledger.evidence_digest(stored.salt, evidence.fields())
    assert "203.0.113.7" not in str(event.evidence_digest)
    [report] = [r for r in verify_ledger_chains(session) if r.chain_key == workspace.id]
    assert report.ok and report.entries == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"event_type": "grant", "at": utcnow() + timedelta(days=1)}, "occurred_at"),
        ({"event_type": "approve"}, "type"),
        ({"event_type": "grant", "method": "telepathy"}, "method"),
        ({"event_type": "grant", "evidence": ledger.Evidence(user_agent="x" * 5000)}, "evidence.user_agent"),
    ],
)
def test_bad_events_name_the_field_and_write_nothing(session: Session, kwargs: dict, field: str) -> None:  # type: ignore[type-arg]
    workspace, contact = workspace_with_contact(session)
    event_type = kwargs.pop("event_type")
    with pytest.raises(InvalidInput) as error:
        record(session, contact, event_type, **kwargs)
    assert error.value.field == field
    assert not [r for r in verify_ledger_chains(session) if r.chain_key == workspace.id]


def test_unknown_purpose_is_named(session: Session) -> None:
    workspace_with_contact(session)
    with pytest.raises(InvalidInput) as error:
        purposes.purpose_by_key(session, "carrier_pigeon")
    assert error.value.field == "purpose"


def test_a_notice_of_another_purpose_or_language_is_refused(session: Session) -> None:
    workspace, _ = workspace_with_contact(session)
    as_system(session, workspace)
    email = purposes.purpose_by_key(session, "email_marketing")
    sms = purposes.purpose_by_key(session, "sms_marketing")
    notice = purposes.create_notice(session, purpose_id=sms.id, language="pl", title="SMS", text="Zgadzam się na SMS.")
    with pytest.raises(InvalidInput, match="another purpose"):
        purposes.resolve_notice(session, purpose=email, notice_id=notice.id)
    with pytest.raises(InvalidInput, match="is in 'pl'"):
        purposes.resolve_notice(session, purpose=sms, notice_id=notice.id, language="en")


def test_states_verify_against_replay(session: Session) -> None:
    workspace, contact = workspace_with_contact(session)
    record(session, contact, "grant", at=utcnow() - timedelta(days=1))
    record(session, contact, "grant", purpose="sms_marketing", at=utcnow() - timedelta(days=1))
    count, problem = verify_states(session)[workspace.id]
    assert count == 2 and problem is None


def test_validity_is_counted_in_exact_days_across_a_dst_change(session: Session) -> None:
    """A grant dated in Warsaw winter time expires 730 × 24 h later, whatever the clock says then."""
    from zoneinfo import ZoneInfo

    workspace, contact = workspace_with_contact(session)
    purpose = purposes.purpose_by_key(session, "email_marketing")
    purposes.update_purpose(session, purpose_id=purpose.id, validity_days=730)
    winter = datetime(2026, 10, 27, 12, 0, tzinfo=ZoneInfo("Europe/Warsaw"))  # CET; +730 days lands in CEST
    record(session, contact, "grant", at=winter)
    state = session.scalars(select(ConsentState)).one()
    assert state.expires_at == winter.astimezone(UTC) + timedelta(days=730)
    _, problem = verify_states(session)[workspace.id]
    assert problem is None, problem


def test_consent_counts_per_purpose_read_a_lapsed_grant_as_expired_and_stay_in_the_workspace(
    session: Session,
) -> None:
    other, stranger = workspace_with_contact(session, "obcy@example.pl")
    record(session, stranger, "grant", at=utcnow() - timedelta(days=1))
    _, anna = workspace_with_contact(session, "anna@example.pl")
    email = purposes.purpose_by_key(session, "email_marketing")
    purposes.update_purpose(session, purpose_id=email.id, validity_days=730)
    people = {
        name: contacts.upsert_contact(session, contacts.ContactData(email=f"{name}@example.pl")).contact
        for name in ("old", "pending", "gone", "unknown")
    }
    now = utcnow()
    record(session, anna, "grant", at=now - timedelta(days=10))
    record(session, anna, "grant", purpose="sms_marketing", at=now - timedelta(days=10))
    record(session, people["old"], "grant", at=now - timedelta(days=800))  # past the 730 days
    record(session, people["pending"], "grant", method="web_form", requires_confirmation=True, at=now)
    record(session, people["gone"], "grant", at=now - timedelta(days=5))
    record(session, people["gone"], "withdraw", at=now - timedelta(days=1))
    record(session, people["unknown"], "grant", method="import", legal_basis="unknown", at=now)

    counts = ledger.consent_counts(session, now=now)

    assert counts[email.id] == {"granted": 1, "pending": 1, "expired": 1, "withdrawn": 1, "none": 1}
    sms = purposes.purpose_by_key(session, "sms_marketing")
    assert counts[sms.id] == {"granted": 1, "pending": 0, "expired": 0, "withdrawn": 0, "none": 0}
    assert set(counts) == {email.id, sms.id}  # the other workspace's grant is not here
    as_system(session, other)
    theirs = purposes.purpose_by_key(session, "email_marketing")
    assert ledger.consent_counts(session, now=now) == {
        theirs.id: {"granted": 1, "pending": 0, "expired": 0, "withdrawn": 0, "none": 0}
    }
