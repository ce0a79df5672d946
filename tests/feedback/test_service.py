"""Feedback applied: tied to its send, stored once, suppression and withdrawal rules."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.support.factories import as_system
from tests.support.sending import SendingSetup, sending_setup
from zgoda.campaigns.links import new_send_ref
from zgoda.campaigns.models import Send, SendStatus
from zgoda.consent.models import ConsentEvent, ConsentState
from zgoda.core.clock import utcnow
from zgoda.core.errors import Conflict
from zgoda.core.tenancy import Actor, bind_scope
from zgoda.feedback import service, suppression
from zgoda.feedback.kinds import BounceClass, FeedbackKind
from zgoda.feedback.models import SendEvent, Suppression


def _sent(session: Session, setup: SendingSetup, index: int = 0) -> Send:
    contact = setup.eligible[index]
    send = Send(campaign_id=setup.campaign.id, contact_id=contact.id, ref=new_send_ref(), status=SendStatus.SENT)
    session.add(send)
    session.flush()
    return send


def _observe(session: Session, send: Send, kind: FeedbackKind, key: str, **fields: object) -> service.Applied:
    bind_scope(session, workspace_id=None, actor=Actor.system("test"))
    return service.apply(session, service.Observation(kind=kind, send_ref=send.ref, dedupe_key=key, **fields))  # type: ignore[arg-type]


@pytest.fixture
def setup(session: Session) -> SendingSetup:
    return sending_setup(session, eligible=2)


def test_a_hard_bounce_suppresses_at_once(session: Session, setup: SendingSetup) -> None:
    send = _sent(session, setup)
    applied = _observe(session, send, FeedbackKind.BOUNCE, "b1", bounce_class=BounceClass.HARD, reason="user_unknown")
    assert (applied.outcome, applied.suppressed) == ("recorded", True)
    as_system(session, setup.workspace)
    entry = suppression.is_suppressed(session, setup.eligible[0].email or "")
    assert entry is not None and entry.reason == "hard_bounce"
    assert entry.hint == "k***@example.pl"


def test_soft_bounces_suppress_after_the_limit(session: Session, setup: SendingSetup) -> None:
    send = _sent(session, setup)
    for number in range(1, 4):
        applied = _observe(
            session,
            send,
            FeedbackKind.BOUNCE,
            f"s{number}",
            bounce_class=BounceClass.SOFT,
            reason="mailbox_full",
            occurred_at=utcnow() - timedelta(days=10 - number),
        )
        assert applied.suppressed == (number == 3)
    as_system(session, setup.workspace)
    assert suppression.is_suppressed(session, setup.eligible[0].email or "").reason == "soft_bounces"  # type: ignore[union-attr]


def test_old_soft_bounces_do_not_count(session: Session, setup: SendingSetup) -> None:
    send = _sent(session, setup)
    for number, days_ago in enumerate((90, 60, 1)):
        _observe(
            session,
            send,
            FeedbackKind.BOUNCE,
            f"old{number}",
            bounce_class=BounceClass.SOFT,
            occurred_at=utcnow() - timedelta(days=days_ago),
        )
    as_system(session, setup.workspace)
    assert suppression.is_suppressed(session, setup.eligible[0].email or "") is None


def test_a_complaint_suppresses_and_withdraws(session: Session, setup: SendingSetup) -> None:
    send = _sent(session, setup)
    applied = _observe(session, send, FeedbackKind.COMPLAINT, "c1", feedback_type="abuse", via="ses")
    assert (applied.suppressed, applied.withdrawn) == (True, True)
    as_system(session, setup.workspace)
    state = session.scalar(select(ConsentState).where(ConsentState.contact_id == send.contact_id))
    assert state is not None and state.status == "withdrawn"
    event = session.get(ConsentEvent, state.event_id)
    assert event is not None and (event.event_type, event.method) == ("withdraw", "complaint")
    entry = suppression.is_suppressed(session, setup.eligible[0].email or "")
    assert entry is not None
    with pytest.raises(Conflict):
        suppression.remove_suppression(session, suppression_id=entry.id)


def test_text_from_outside_with_a_nul_character_is_recorded(session: Session, setup: SendingSetup) -> None:
    """A webhook's or a report's fields holding NUL (which PostgreSQL's text refuses) are recorded with
    U+FFFD in its place, not failed (a provider would retry the event forever)."""
    send = _sent(session, setup)
    applied = _observe(
        session,
        send,
        FeedbackKind.COMPLAINT,
        "nul\x00key",
        feedback_type="abuse\x00",
        status="5.7.1\x00",
        reason="spam\x00",
        via="postmark",
        detail={"diagnostic": "a\x00b", "nested": ["c\x00"]},
        user_agent="agent\x00",
    )
    assert applied.outcome == "recorded" and applied.withdrawn
    as_system(session, setup.workspace)
    [event] = session.scalars(select(SendEvent)).all()
    assert (event.status, event.reason, event.dedupe_key) == ("5.7.1\ufffd", "spam\ufffd", "nul\ufffdkey")
    assert event.detail["diagnostic"] == "a\ufffdb" and event.detail["nested"] == ["c\ufffd"]


def test_the_same_event_five_times_is_one_record(session: Session, setup: SendingSetup) -> None:
    send = _sent(session, setup)
    outcomes = [_observe(session, send, FeedbackKind.DELIVERY, "ses:abc").outcome for _ in range(5)]
    assert outcomes == ["recorded"] + ["duplicate"] * 4
    as_system(session, setup.workspace)
    assert session.scalar(select(func.count(SendEvent.id)).where(SendEvent.send_id == send.id)) == 1


def test_feedback_that_names_no_send_or_the_wrong_recipient_is_ignored(session: Session, setup: SendingSetup) -> None:
    send = _sent(session, setup)
    bind_scope(session, workspace_id=None, actor=Actor.system("test"))
    unknown = service.apply(session, service.Observation(kind=FeedbackKind.BOUNCE, send_ref="a" * 26, dedupe_key="x1"))
    missing = service.apply(session, service.Observation(kind=FeedbackKind.BOUNCE, send_ref=None, dedupe_key="x2"))
    wrong = _observe(session, send, FeedbackKind.COMPLAINT, "x3", recipient="someone.else@example.pl")
    assert [a.outcome for a in (unknown, missing, wrong)] == ["ignored"] * 3
    as_system(session, setup.workspace)
    assert session.scalar(select(func.count(Suppression.id))) == 0
    assert session.scalar(select(func.count(SendEvent.id))) == 0


def test_an_endpoint_scoped_to_one_workspace_ignores_anothers_send(session: Session, setup: SendingSetup) -> None:
    send = _sent(session, setup)
    other = sending_setup(session, eligible=1)
    bind_scope(session, workspace_id=other.workspace.id, actor=Actor.system("test"))
    applied = service.apply(
        session, service.Observation(kind=FeedbackKind.COMPLAINT, send_ref=send.ref, dedupe_key="y1")
    )
    assert applied.outcome == "ignored"
    as_system(session, setup.workspace)
    assert session.scalar(select(func.count(SendEvent.id))) == 0


def test_an_unsubscribe_withdraws_without_suppressing(session: Session, setup: SendingSetup) -> None:
    send = _sent(session, setup)
    applied = _observe(session, send, FeedbackKind.UNSUBSCRIBE, "u1", via="one_click", user_agent="Gmail")
    assert (applied.withdrawn, applied.suppressed) == (True, False)
    again = _observe(session, send, FeedbackKind.UNSUBSCRIBE, "u2", via="one_click")
    assert again.withdrawn is False  # already withdrawn: nothing more in the ledger
    as_system(session, setup.workspace)
    methods = list(session.scalars(select(ConsentEvent.method).where(ConsentEvent.contact_id == send.contact_id)))
    assert methods.count("one_click") == 1


def test_operators_add_and_remove_suppressions(session: Session, setup: SendingSetup) -> None:
    as_system(session, setup.workspace)
    entry, new = suppression.suppress(session, address="Ktos@Example.PL", reason="operator", detail="asked by phone")
    assert new
    again, new_again = suppression.suppress(session, address="ktos@example.pl", reason="operator")
    assert (again.id, new_again) == (entry.id, False)
    rows, total = suppression.list_suppressions(session, address="KTOS@example.pl")
    assert total == 1 and rows[0].id == entry.id
    suppression.remove_suppression(session, suppression_id=entry.id)
    assert suppression.is_suppressed(session, "ktos@example.pl") is None
