"""Tampering with the consent ledger: the database refuses it, and verification names what was touched.

Each test changes, deletes or reorders one row directly in SQL (after dropping the append-only
triggers inside the test's transaction, which the rollback restores) and checks that
``verify_ledger_chains`` and ``zgoda.verification.verify_everything`` name the workspace, the
sequence number and the entry id. An erasure (evidence deleted, the contact's personal data
blanked) is the one change that must leave everything verifying.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from tests.support.consent import record, workspace_with_contact
from tests.support.factories import as_system
from zgoda.accounts.models import Workspace
from zgoda.consent import ledger
from zgoda.consent.models import ConsentEvent, ConsentEvidence
from zgoda.consent.verify import verify_ledger_chains, verify_states
from zgoda.contacts import service as contacts
from zgoda.contacts.models import Contact
from zgoda.core.chain import ChainReport, drop_append_only_ddl
from zgoda.core.clock import utcnow
from zgoda.core.db import UTCDateTime
from zgoda.verification import CheckResult, verify_everything


@dataclass
class Ledger:
    workspace: Workspace
    contact: Contact
    events: list[ConsentEvent]  # in seq order

    def seq(self, number: int) -> ConsentEvent:
        return self.events[number - 1]


def _ledger(session: Session, email: str = "jan.kowalski@example.pl") -> Ledger:
    """Six events: a double opt-in with evidence, a refresh, an SMS grant, a withdrawal, an SMS refresh."""
    workspace, contact = workspace_with_contact(session, email)
    now = utcnow()
    form = ledger.Evidence(ip="203.0.113.7", user_agent="Mozilla/5.0", page_url="https://sklep.example.pl/zapis")
    click = ledger.Evidence(ip="203.0.113.8", user_agent="Mozilla/5.0")
    events = [
        record(session, contact, "grant", method="web_form", requires_confirmation=True, evidence=form,
               at=now - timedelta(days=9)),
        record(session, contact, "confirm", method="double_opt_in", evidence=click, at=now - timedelta(days=8)),
        record(session, contact, "refresh", method="preference_centre", at=now - timedelta(days=7)),
        record(session, contact, "grant", purpose="sms_marketing", method="web_form", evidence=form,
               at=now - timedelta(days=6)),
        record(session, contact, "withdraw", method="unsubscribe_link", at=now - timedelta(days=5)),
        record(session, contact, "refresh", purpose="sms_marketing", method="preference_centre",
               at=now - timedelta(days=4)),
    ]  # fmt: skip
    assert [event.seq for event in events] == [1, 2, 3, 4, 5, 6]
    return Ledger(workspace, contact, events)


def _drop_triggers(session: Session) -> None:
    for statement in drop_append_only_ddl("consent_events", session.get_bind().dialect.name):
        session.execute(text(statement))


def _sql(session: Session, statement: str, **params: object) -> None:
    session.execute(text(statement), params)
    session.expire_all()


def _report(session: Session, workspace: Workspace) -> ChainReport:
    [report] = [r for r in verify_ledger_chains(session) if r.chain_key == workspace.id]
    return report


def _everything(session: Session, workspace: Workspace, check: str) -> CheckResult:
    [result] = [r for r in verify_everything(session) if r.check == check and r.scope == workspace.slug]
    return result


def _assert_named(
    session: Session, book: Ledger, *, seq: int, entry_id: int, reason: str, verified: int | None = None
) -> None:
    report = _report(session, book.workspace)
    assert not report.ok and report.problem is not None
    assert (report.problem.seq, report.problem.entry_id) == (seq, entry_id)
    assert reason in report.problem.reason
    assert report.entries == (seq - 1 if verified is None else verified)  # the entries before the problem
    result = _everything(session, book.workspace, "ledger")
    assert not result.ok
    assert (result.first_bad_seq, result.first_bad_id) == (seq, entry_id)
    assert result.problem is not None and reason in result.problem


def test_an_untouched_ledger_verifies_everywhere(session: Session) -> None:
    book = _ledger(session)
    report = _report(session, book.workspace)
    assert report.ok and report.entries == 6 and report.head_hash == book.seq(6).hash
    assert verify_states(session)[book.workspace.id] == (2, None)
    for check in ("ledger", "consent_state"):
        assert _everything(session, book.workspace, check).ok


# -- the database itself refuses changes ---------------------------------------------------------------------


def test_the_database_refuses_update(session: Session) -> None:
    book = _ledger(session)
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text("UPDATE consent_events SET event_type = 'grant' WHERE id = :id"), {"id": book.seq(5).id})


def test_the_database_refuses_delete(session: Session) -> None:
    book = _ledger(session)
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text("DELETE FROM consent_events WHERE id = :id"), {"id": book.seq(3).id})


def test_postgresql_refuses_truncate(session: Session) -> None:
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("TRUNCATE exists on PostgreSQL only")
    _ledger(session)
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text("TRUNCATE consent_events CASCADE"))


# -- with the triggers dropped: verification names the row ---------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("event_type", "'grant'"),  # the withdrawal turned into a grant
        ("legal_basis", "'legitimate_interest'"),
        ("method", "'operator'"),
        ("occurred_at", None),  # thirty days earlier, bound below
        ("contact_ref", "'0123456789abcdef0123456789abcdef'"),
        ("purpose_id", None),  # the SMS purpose, bound below
        ("actor", "'someone else'"),
        ("evidence_digest", "'" + "0" * 64 + "'"),
        ("reference", "'forged'"),
    ],
)
def test_verify_names_a_changed_entry(session: Session, column: str, value: str | None) -> None:
    book = _ledger(session)
    target = book.seq(5)
    statement = text(f"UPDATE consent_events SET {column} = {value} WHERE id = :id")
    params: dict[str, object] = {"id": target.id}
    if column == "occurred_at":
        statement = text("UPDATE consent_events SET occurred_at = :v WHERE id = :id")
        statement = statement.bindparams(bindparam("v", type_=UTCDateTime()))
        params["v"] = target.occurred_at - timedelta(days=30)
    if column == "purpose_id":
        statement, params["v"] = (
            text("UPDATE consent_events SET purpose_id = :v WHERE id = :id"),
            book.seq(4).purpose_id,
        )
    _drop_triggers(session)
    session.execute(statement, params)
    session.expire_all()
    _assert_named(session, book, seq=5, entry_id=target.id, reason="altered after it was written")


def test_verify_names_an_event_moved_to_another_contact(session: Session) -> None:
    """``contact_id`` is not hashed (``contact_ref`` is): verification checks the two still agree."""
    book = _ledger(session)
    other = contacts.upsert_contact(session, contacts.ContactData(email="anna.nowak@example.pl")).contact
    _drop_triggers(session)
    _sql(session, "UPDATE consent_events SET contact_id = :c WHERE id = :id", c=other.id, id=book.seq(3).id)
    _assert_named(session, book, seq=3, entry_id=book.seq(3).id, reason="names contact")


def test_verify_names_a_rewritten_hash(session: Session) -> None:
    book = _ledger(session)
    _drop_triggers(session)
    _sql(session, "UPDATE consent_events SET hash = :h WHERE id = :id", h="f" * 64, id=book.seq(2).id)
    _assert_named(session, book, seq=2, entry_id=book.seq(2).id, reason="altered after it was written")


def test_verify_names_a_deleted_entry(session: Session) -> None:
    book = _ledger(session)
    _drop_triggers(session)
    _sql(session, "DELETE FROM consent_events WHERE id = :id", id=book.seq(3).id)  # nothing references it
    _assert_named(session, book, seq=4, entry_id=book.seq(4).id, reason="entry #3 is missing", verified=2)


def test_verify_names_a_deleted_and_renumbered_entry(session: Session) -> None:
    book = _ledger(session)
    _drop_triggers(session)
    _sql(session, "DELETE FROM consent_events WHERE id = :id", id=book.seq(3).id)
    for seq in (4, 5, 6):
        _sql(session, "UPDATE consent_events SET seq = :n WHERE id = :id", n=seq - 1, id=book.seq(seq).id)
    _assert_named(session, book, seq=3, entry_id=book.seq(4).id, reason="does not follow the entry before it")


def test_verify_names_reordered_entries(session: Session) -> None:
    book = _ledger(session)
    third, fourth = book.seq(3), book.seq(4)
    _drop_triggers(session)
    _sql(session, "UPDATE consent_events SET seq = 1000 WHERE id = :id", id=third.id)
    _sql(session, "UPDATE consent_events SET seq = 3 WHERE id = :id", id=fourth.id)
    _sql(session, "UPDATE consent_events SET seq = 4 WHERE id = :id", id=third.id)
    _assert_named(session, book, seq=3, entry_id=fourth.id, reason="does not follow the entry before it")


def test_a_broken_chain_does_not_hide_other_workspaces(session: Session) -> None:
    broken = _ledger(session, "a@example.pl")
    intact = _ledger(session, "b@example.pl")
    _drop_triggers(session)
    _sql(session, "UPDATE consent_events SET actor = 'x' WHERE id = :id", id=broken.seq(1).id)
    assert _report(session, broken.workspace).problem is not None
    assert _report(session, intact.workspace).ok and _report(session, intact.workspace).entries == 6
    assert _everything(session, intact.workspace, "ledger").ok


# -- the state table -----------------------------------------------------------------------------------------


def test_verify_names_a_state_row_flipped_to_granted(session: Session) -> None:
    book = _ledger(session)
    email_purpose = book.seq(5).purpose_id
    _sql(
        session,
        "UPDATE consent_states SET status = 'granted' WHERE contact_id = :c AND purpose_id = :p",
        c=book.contact.id,
        p=email_purpose,
    )
    count, mismatch = verify_states(session)[book.workspace.id]
    assert count == 2 and mismatch is not None
    assert (mismatch.workspace_id, mismatch.contact_id, mismatch.purpose_id) == (
        book.workspace.id,
        book.contact.id,
        email_purpose,
    )
    assert mismatch.stored.startswith("granted") and mismatch.replayed.startswith("withdrawn")
    result = _everything(session, book.workspace, "consent_state")
    assert not result.ok and result.problem is not None
    assert f"contact {book.contact.id}" in result.problem and f"purpose {email_purpose}" in result.problem
    assert _everything(session, book.workspace, "ledger").ok  # the ledger itself is intact


def test_verify_names_a_state_row_pointing_at_another_event(session: Session) -> None:
    book = _ledger(session)
    _sql(
        session,
        "UPDATE consent_states SET event_id = :e WHERE contact_id = :c AND purpose_id = :p",
        e=book.seq(3).id,
        c=book.contact.id,
        p=book.seq(5).purpose_id,
    )
    _, mismatch = verify_states(session)[book.workspace.id]
    assert mismatch is not None and mismatch.contact_id == book.contact.id


def test_verify_names_a_deleted_state_row(session: Session) -> None:
    book = _ledger(session)
    _sql(session, "DELETE FROM consent_states WHERE contact_id = :c AND purpose_id = :p", c=book.contact.id,
         p=book.seq(4).purpose_id)  # fmt: skip
    _, mismatch = verify_states(session)[book.workspace.id]
    assert mismatch is not None and mismatch.stored == "no state"


# -- erasure is by design not tampering ----------------------------------------------------------------------


def test_erasing_evidence_and_personal_data_keeps_everything_verifying(session: Session) -> None:
    book = _ledger(session)
    evidence_ids = [e.id for e in book.events if e.evidence_digest is not None]
    assert len(evidence_ids) == 3
    as_system(session, book.workspace)
    for row in session.scalars(select(ConsentEvidence).where(ConsentEvidence.event_id.in_(evidence_ids))):
        session.delete(row)
    person = session.get(Contact, book.contact.id)
    assert person is not None
    person.email = person.first_name = person.last_name = person.phone = None
    person.erased_at = utcnow()
    session.flush()
    session.expire_all()
    assert (
        session.scalars(select(ConsentEvidence.event_id).where(ConsentEvidence.event_id.in_(evidence_ids))).all() == []
    )
    report = _report(session, book.workspace)
    assert report.ok and report.entries == 6
    assert verify_states(session)[book.workspace.id] == (2, None)
    for check in ("ledger", "consent_state", "audit"):
        assert _everything(session, book.workspace, check).ok
    # and an erased contact may still withdraw: the ledger and its chain keep working
    record(session, person, "withdraw", purpose="sms_marketing", method="dsr")
    assert _report(session, book.workspace).ok and _report(session, book.workspace).entries == 7
