"""Sending through a real SMTP server on loopback: the gate per message, the footer and headers, send rows."""

from __future__ import annotations

import email
import email.policy
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tests.support.consent import record
from tests.support.sending import SendingSetup, send_status_counts, sending_setup
from zgoda.campaigns import domains, sending
from zgoda.campaigns import service as campaigns
from zgoda.campaigns.models import CampaignStatus, Send, SendStatus
from zgoda.consent.models import ConsentEvent
from zgoda.core.clock import utcnow
from zgoda.core.db import Database
from zgoda.core.errors import Conflict, InvalidInput
from zgoda.core.settings import Settings
from zgoda.core.tenancy import Actor, bind_scope
from zgoda.delivery.dkim import verify
from zgoda.delivery.sink import SmtpSink
from zgoda.delivery.transport import SmtpSettings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.base_url = "https://zgoda.example.com"
    return settings


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    with SmtpSink(tmp_path / "maildir") as running:
        yield running


def _smtp(sink: SmtpSink) -> SmtpSettings:
    return SmtpSettings(host=sink.host, port=sink.port)


def _messages(sink: SmtpSink, maildir: Path) -> list[email.message.EmailMessage]:
    found = []
    for path in sorted((maildir / "new").iterdir()):
        found.append(email.message_from_bytes(path.read_bytes(), policy=email.policy.default))
    return found  # type: ignore[return-value]


def _started(db: Database, session: Session, *, eligible: int) -> SendingSetup:
    """A sending setup whose campaign is started and prepared (its send rows exist), committed."""
    setup = sending_setup(session, eligible=eligible)
    campaigns.send_campaign(session, campaign_id=setup.campaign.id)
    session.commit()
    sending.prepare(db, setup.campaign.id)
    return setup


def _claim(db: Database, setup: SendingSetup, *, worker: str, size: int, lease: float = 60) -> list[sending.Claimed]:
    """``worker`` claims up to ``size`` of the campaign's sends in a transaction of its own, committed."""
    with db.transaction() as session:
        bind_scope(session, workspace_id=setup.workspace.id, actor=Actor.system("test"))
        return sending.claim(session, setup.campaign.id, worker=worker, size=size, lease=lease)


def _send(db: Database, session: Session, settings: Settings, sink: SmtpSink, campaign_id: int) -> sending.RunOutcome:
    campaigns.send_campaign(session, campaign_id=campaign_id)
    session.commit()
    sending.prepare(db, campaign_id)
    return sending.run(db, campaign_id, settings, smtp=_smtp(sink), connections=2)


def test_a_campaign_reaches_exactly_the_consenting_contacts(
    db: Database, session: Session, settings: Settings, sink: SmtpSink, tmp_path: Path
) -> None:
    setup = sending_setup(session, eligible=3)
    outcome = _send(db, session, settings, sink, setup.campaign.id)
    assert (outcome.sent, outcome.refused, outcome.stopped) == (3, 2, "done")
    messages = _messages(sink, tmp_path / "maildir")
    assert sorted(m["To"] for m in messages) == sorted(c.email for c in setup.eligible)

    rows = {row.contact_id: row for row in session.scalars(select(Send).where(Send.campaign_id == setup.campaign.id))}
    for contact in setup.eligible:
        row = rows[contact.id]
        assert row.status == SendStatus.SENT
        grant = session.get(ConsentEvent, row.consent_event_id)
        assert grant is not None and grant.event_type == "grant" and grant.contact_id == contact.id
    for reason, contact in setup.refused.items():
        assert (rows[contact.id].status, rows[contact.id].reason) == (SendStatus.REFUSED, reason)
        assert rows[contact.id].ref is None

    session.refresh(setup.campaign)
    assert setup.campaign.status == CampaignStatus.SENT
    figures = campaigns.progress(session, campaign_id=setup.campaign.id)
    assert figures["sent"] == 3
    assert figures["refused_by_reason"] == {"consent_withdrawn": 1, "no_consent": 1}


def test_no_thread_switch_is_forced_between_a_commit_and_its_kept_dots(
    db: Database, session: Session, settings: Settings, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiting thread could otherwise take the interpreter there, and a kill in its turn skips messages."""
    intervals: list[float] = []
    keep = sending._Dots.keep_if_killed

    def keeping(dots: sending._Dots) -> None:
        intervals.append(sys.getswitchinterval())
        keep(dots)

    monkeypatch.setattr(sending._Dots, "keep_if_killed", keeping)
    before = sys.getswitchinterval()
    setup = sending_setup(session, eligible=4)
    outcome = _send(db, session, settings, sink, setup.campaign.id)
    assert outcome.sent == 4
    assert intervals and min(intervals) == pytest.approx(sending.COMMIT_SWITCH_SECONDS, rel=0.02)
    assert sys.getswitchinterval() == before  # the process's own interval again between group commits


def test_the_switch_hold_lasts_until_the_last_group_commit_of_the_process_ends() -> None:
    switches = sending._ThreadSwitches()
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        outside = sys.getswitchinterval()
        with ExitStack() as second:
            with switches.held():
                assert sys.getswitchinterval() == pytest.approx(sending.COMMIT_SWITCH_SECONDS, rel=0.02)
                second.enter_context(switches.held())
            assert sys.getswitchinterval() == pytest.approx(sending.COMMIT_SWITCH_SECONDS, rel=0.02)  # still one
        assert sys.getswitchinterval() == outside
        with switches.held():
            pass
        assert sys.getswitchinterval() == outside
    finally:
        sys.setswitchinterval(before)


def test_every_message_carries_the_footer_and_the_unsubscribe_headers(
    db: Database, session: Session, settings: Settings, sink: SmtpSink, tmp_path: Path
) -> None:
    setup = sending_setup(session, eligible=1)
    _send(db, session, settings, sink, setup.campaign.id)
    (message,) = _messages(sink, tmp_path / "maildir")
    row = session.scalars(select(Send).where(Send.campaign_id == setup.campaign.id, Send.status == "sent")).one()
    assert row.ref is not None
    assert message["Message-ID"] == f"<{row.ref}@kawiarnia.example.pl>"
    assert message["Return-Path"] == f"<bounces+{row.ref}@kawiarnia.example.pl>"
    assert message["X-Zgoda-Ref"] == row.ref
    unsubscribe = message["List-Unsubscribe"]
    assert unsubscribe.startswith("<https://zgoda.example.com/u/")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Subject"] == f"Zima w {setup.workspace.name}"
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Cześć Anna0!" in html
    for part in (html, text):
        assert "Kawiarnia Pod Zegarem sp. z o.o." in part
        assert "Warszawa" in part
        assert "Wypisz się" in part
        assert unsubscribe.strip("<>") in part.replace("&amp;", "&")
    assert html.rindex("Wypisz") > html.index("Nowa karta zimowa")


def test_the_gate_decides_at_send_time_not_at_scheduling(
    db: Database, session: Session, settings: Settings, sink: SmtpSink
) -> None:
    setup = sending_setup(session, eligible=2)
    campaigns.send_campaign(session, campaign_id=setup.campaign.id)
    session.commit()
    sending.prepare(db, setup.campaign.id)
    changed_mind = setup.eligible[0]
    record(session, changed_mind, "withdraw", method="unsubscribe_link")
    session.commit()
    outcome = sending.run(db, setup.campaign.id, settings, smtp=_smtp(sink), connections=2)
    assert outcome.sent == 1
    row = session.scalars(select(Send).where(Send.contact_id == changed_mind.id)).one()
    assert (row.status, row.reason) == (SendStatus.REFUSED, "consent_withdrawn")
    assert sink.received == 1


def test_messages_are_dkim_signed_over_the_unsubscribe_headers(
    db: Database, session: Session, settings: Settings, sink: SmtpSink, tmp_path: Path
) -> None:
    setup = sending_setup(session, eligible=1)
    record_ = domains.add_sending_domain(session, domain="kawiarnia.example.pl", secret=settings.resolved_secret_key())
    name, value = domains.dns_txt(record_)
    _send(db, session, settings, sink, setup.campaign.id)
    raw = next((tmp_path / "maildir" / "new").iterdir()).read_bytes()
    raw = raw.split(b"\r\n", 1)[1].split(b"\r\n", 1)[1]  # without the sink's Return-Path and Delivered-To
    signature = email.message_from_bytes(raw)["DKIM-Signature"]
    assert "list-unsubscribe:list-unsubscribe-post" in signature.replace(" ", "").replace("\r\n", "").lower()
    assert verify(raw, lambda asked: value if asked.rstrip(".") == name else None)
    tampered = raw.replace(b"List-Unsubscribe: <http", b"List-Unsubscribe: <hxxp", 1)
    assert not verify(tampered, lambda asked: value if asked.rstrip(".") == name else None)


def test_refused_recipients_fail_with_the_servers_reason(
    db: Database, session: Session, settings: Settings, tmp_path: Path
) -> None:
    from tests.delivery.conftest import Recorder
    from zgoda.delivery.sink import SmtpServerThread

    setup = sending_setup(session, eligible=2)
    refused_address = setup.eligible[1].email
    assert refused_address is not None
    handler = Recorder(rcpt_replies={refused_address: "550 5.1.1 <x>: Recipient address rejected: User unknown"})
    with SmtpServerThread(handler) as server:
        campaigns.send_campaign(session, campaign_id=setup.campaign.id)
        session.commit()
        sending.prepare(db, setup.campaign.id)
        outcome = sending.run(
            db, setup.campaign.id, settings, smtp=SmtpSettings(host="127.0.0.1", port=server.port), connections=1
        )
    assert (outcome.sent, outcome.failed) == (1, 1)
    row = session.scalars(select(Send).where(Send.contact_id == setup.eligible[1].id)).one()
    assert (row.status, row.reason) == (SendStatus.FAILED, "smtp_5.1.1")
    assert row.smtp_reply is not None and "User unknown" in row.smtp_reply


def test_sending_twice_is_a_no_op_that_says_so(session: Session) -> None:
    setup = sending_setup(session, eligible=1)
    first = campaigns.send_campaign(session, campaign_id=setup.campaign.id)
    second = campaigns.send_campaign(session, campaign_id=setup.campaign.id)
    assert (first.action, second.action) == ("started", "already_sending")
    assert "already" in second.message


def test_a_campaign_needs_the_senders_identity(session: Session) -> None:
    setup = sending_setup(session, eligible=1, controller=False)
    with pytest.raises(InvalidInput) as error:
        campaigns.send_campaign(session, campaign_id=setup.campaign.id)
    assert error.value.field == "controller"
    session.refresh(setup.campaign)
    assert setup.campaign.status == CampaignStatus.DRAFT


def test_scheduling_in_the_past_is_refused_and_cancel_before_start_works(session: Session) -> None:
    setup = sending_setup(session, eligible=1)
    with pytest.raises(InvalidInput) as error:
        campaigns.send_campaign(session, campaign_id=setup.campaign.id, at=utcnow() - timedelta(minutes=1))
    assert error.value.field == "scheduled_at"
    later = utcnow() + timedelta(hours=2)
    scheduled = campaigns.send_campaign(session, campaign_id=setup.campaign.id, at=later.replace(tzinfo=None))
    assert scheduled.action == "scheduled"
    assert setup.campaign.scheduled_at is not None  # a naive time is read in the workspace's zone (Europe/Warsaw)
    assert abs((setup.campaign.scheduled_at - later).total_seconds()) > 60
    assert campaigns.start_due_campaigns(session) == []
    campaigns.cancel_campaign(session, campaign_id=setup.campaign.id)
    assert setup.campaign.status == CampaignStatus.CANCELLED
    with pytest.raises(Conflict):
        campaigns.send_campaign(session, campaign_id=setup.campaign.id)


def test_pause_stops_and_resume_finishes(fresh_database_url: str, settings: Settings, sink: SmtpSink) -> None:
    # a real database: the pause below commits from a connection thread while the run goes on
    db = Database.from_url(fresh_database_url)
    settings.send_batch_size = 2
    with db.transaction() as session:
        setup = sending_setup(session, eligible=6)
        campaign_id, workspace_id = setup.campaign.id, setup.workspace.id
        campaigns.send_campaign(session, campaign_id=campaign_id)
    sending.prepare(db, campaign_id)

    def scoped(session: Session) -> Session:
        bind_scope(session, workspace_id=workspace_id, actor=Actor.system("test"))
        return session

    def pause_after_the_first_message(sent: int) -> None:
        with db.transaction() as other:
            if campaigns.get_campaign(scoped(other), campaign_id=campaign_id).status == CampaignStatus.SENDING:
                campaigns.pause_campaign(other, campaign_id=campaign_id)

    first = sending.run(
        db, campaign_id, settings, smtp=_smtp(sink), connections=1, on_sent=pause_after_the_first_message
    )
    assert first.stopped == CampaignStatus.PAUSED
    assert 0 < sink.received < 6
    with db.transaction() as session:
        campaigns.resume_campaign(scoped(session), campaign_id=campaign_id)
    second = sending.run(db, campaign_id, settings, smtp=_smtp(sink), connections=2)
    assert second.stopped == "done"
    assert sink.received == 6
    assert first.sent + second.sent == 6
    with db.transaction() as session:
        attempts = scoped(session).scalars(select(Send.attempts).where(Send.campaign_id == campaign_id)).all()
    assert max(attempts) == 1, "a send given back at the pause must not count as an attempt"
    db.engine.dispose()


def test_only_contacts_with_a_profiling_consent_are_tracked(
    db: Database, session: Session, settings: Settings, sink: SmtpSink, tmp_path: Path
) -> None:
    setup = sending_setup(session, eligible=2)
    record(session, setup.eligible[0], "grant", purpose="profiling")
    _send(db, session, settings, sink, setup.campaign.id)
    by_recipient = {m["To"]: m.get_body(("html",)).get_content() for m in _messages(sink, tmp_path / "maildir")}  # type: ignore[union-attr]
    tracked, plain = by_recipient[setup.eligible[0].email], by_recipient[setup.eligible[1].email]
    assert "/t/o/" in tracked
    assert "/t/o/" not in plain
    assert "/t/c/" not in plain


def test_a_message_that_cannot_be_rendered_for_one_contact_fails_alone(
    db: Database, session: Session, settings: Settings, sink: SmtpSink
) -> None:
    from zgoda.contacts import service as contacts

    setup = sending_setup(session, eligible=3)
    for number, contact in enumerate(setup.eligible):  # text + 1 fails for the first one only
        portions: str | int = "dużo" if number == 0 else number
        contacts.upsert_contact(session, contacts.ContactData(email=contact.email, attributes={"porcje": portions}))
    template = campaigns.create_template(
        session, name="Porcje", subject="Porcje", html="<p>{{ contact.porcje + 1 }} porcji</p>"
    )
    campaign = campaigns.create_campaign(
        session,
        name="Porcje",
        purpose_key="email_marketing",
        template_id=template.id,
        from_name="Kawiarnia",
        from_email="news@kawiarnia.example.pl",
        list_id=setup.campaign.list_id,
        language="pl",
    )
    outcome = _send(db, session, settings, sink, campaign.id)
    assert (outcome.sent, outcome.failed, outcome.stopped) == (2, 1, "done")
    assert outcome.by_reason[sending.RENDER_FAILED] == 1
    assert sink.received == 2
    rows = {row.contact_id: row for row in session.scalars(select(Send).where(Send.campaign_id == campaign.id))}
    failed = rows[setup.eligible[0].id]
    assert (failed.status, failed.reason, failed.ref) == (SendStatus.FAILED, sending.RENDER_FAILED, None)
    assert failed.smtp_reply is not None and "html" in failed.smtp_reply  # names the part that failed
    assert {rows[c.id].status for c in setup.eligible[1:]} == {SendStatus.SENT}


def _stopped_after_the_first_message(
    db: Database, settings: Settings, setup: SendingSetup, stop: Callable[..., object]
) -> tuple[sending.RunOutcome, int]:
    """Run with one connection; ``stop`` (pause or cancel) the campaign once the first message is out."""
    with SmtpSink(None, discard=True) as sink:

        def stop_once(sent: int) -> None:
            with db.transaction() as other:
                bind_scope(other, workspace_id=setup.workspace.id, actor=Actor.system("test"))
                if campaigns.get_campaign(other, campaign_id=setup.campaign.id).status == CampaignStatus.SENDING:
                    stop(other, campaign_id=setup.campaign.id)

        outcome = sending.run(db, setup.campaign.id, settings, smtp=_smtp(sink), connections=1, on_sent=stop_once)
        return outcome, sink.received


def test_nothing_goes_out_once_the_campaign_is_paused(db: Database, session: Session, settings: Settings) -> None:
    """The group commit reads the campaign's state: after a pause no row is marked sent, no final dot written."""
    setup = _started(db, session, eligible=4)
    first, received = _stopped_after_the_first_message(db, settings, setup, campaigns.pause_campaign)
    assert first.stopped == CampaignStatus.PAUSED
    assert first.sent == received == 1
    session.expire_all()
    statuses = sorted(session.scalars(select(Send.status).where(Send.campaign_id == setup.campaign.id)))
    assert statuses.count(SendStatus.SENT) == 1
    assert statuses.count(SendStatus.PENDING) == 3, "the sends not delivered are waiting for the resume"


def test_an_unreachable_server_stops_the_run_and_loses_nothing(
    db: Database, session: Session, settings: Settings, sink: SmtpSink
) -> None:
    import socket

    setup = _started(db, session, eligible=5)
    with socket.socket() as placeholder:  # a port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        dead = SmtpSettings(host="127.0.0.1", port=placeholder.getsockname()[1], timeout=2)
    for _ in range(sending.MAX_ATTEMPTS + 1):  # an outage longer than the attempts allowed
        with pytest.raises(sending.SmtpUnavailable):
            sending.run(db, setup.campaign.id, settings, smtp=dead, connections=2)
    session.expire_all()
    rows = session.scalars(select(Send).where(Send.campaign_id == setup.campaign.id, Send.reason.is_(None))).all()
    assert {row.status for row in rows} == {SendStatus.PENDING}, "every eligible send is waiting for the next run"
    assert all(row.claimed_by is None and row.attempts == 0 for row in rows), "never reaching a server is no attempt"
    assert sink.received == 0
    again = sending.run(db, setup.campaign.id, settings, smtp=_smtp(sink), connections=2)
    assert (again.sent, again.stopped) == (5, "done")
    assert sink.received == 5


def test_a_batch_the_gate_could_not_decide_is_given_back_without_an_attempt(
    db: Database, session: Session, settings: Settings, sink: SmtpSink
) -> None:
    setup = _started(db, session, eligible=3)
    domains.add_sending_domain(session, domain="kawiarnia.example.pl", secret=b"another installation's key")
    session.commit()
    for _ in range(sending.MAX_ATTEMPTS + 1):  # the DKIM key cannot be read: the batch is claimed, then fails
        with pytest.raises(Conflict, match="DKIM key"):
            sending.run(db, setup.campaign.id, settings, smtp=_smtp(sink), connections=2)
    session.expire_all()
    rows = session.scalars(select(Send).where(Send.campaign_id == setup.campaign.id)).all()
    assert len(rows) == 5  # the gate never ran: the two without consent are not refused yet either
    assert {(row.status, row.claimed_by, row.attempts) for row in rows} == {(SendStatus.PENDING, None, 0)}
    assert sink.received == 0


def test_a_cancel_during_sending_leaves_nothing_pending(db: Database, session: Session, settings: Settings) -> None:
    setup = _started(db, session, eligible=4)
    first, received = _stopped_after_the_first_message(db, settings, setup, campaigns.cancel_campaign)
    assert first.stopped == CampaignStatus.CANCELLED
    assert first.sent == received == 1
    session.expire_all()
    statuses = sorted(session.scalars(select(Send.status).where(Send.campaign_id == setup.campaign.id)))
    assert statuses.count(SendStatus.SENT) == 1
    assert SendStatus.PENDING not in statuses and SendStatus.SENDING not in statuses
    assert statuses.count(SendStatus.CANCELLED) == 3


def test_a_scheduled_campaign_that_could_not_start_is_started_by_resume(
    db: Database, session: Session, settings: Settings, sink: SmtpSink
) -> None:
    from tests.support.sending import CONTROLLER
    from zgoda.accounts import service as accounts

    setup = sending_setup(session, eligible=2, controller=False)
    setup.campaign.status = CampaignStatus.SCHEDULED  # its time has come (scheduling in the past is refused)
    setup.campaign.scheduled_at = utcnow() - timedelta(minutes=1)
    session.flush()
    assert campaigns.start_due_campaigns(session) == []
    assert setup.campaign.status == CampaignStatus.PAUSED  # no sender identity: it could not start
    assert "html" not in (setup.campaign.content or {})
    accounts.update_workspace_settings(session, workspace=setup.workspace, controller=CONTROLLER)
    campaigns.resume_campaign(session, campaign_id=setup.campaign.id)
    assert setup.campaign.status == CampaignStatus.SENDING
    assert "Nowa karta zimowa" in setup.campaign.content["html"]  # the template frozen now
    session.commit()
    sending.prepare(db, setup.campaign.id)
    outcome = sending.run(db, setup.campaign.id, settings, smtp=_smtp(sink), connections=1)
    assert (outcome.sent, outcome.stopped) == (2, "done")
    assert sink.received == 2


def test_sends_a_dead_worker_held_in_a_cancelled_campaign_are_cancelled(db: Database, session: Session) -> None:
    setup = _started(db, session, eligible=3)
    claimed = _claim(db, setup, worker="dead", size=2, lease=0.01)  # a worker claims two sends, then dies
    assert len(claimed) == 2
    campaigns.cancel_campaign(session, campaign_id=setup.campaign.id)
    session.execute(  # the dead worker's leases run out
        update(Send).where(Send.campaign_id == setup.campaign.id).values(claimed_until=utcnow() - timedelta(seconds=1))
    )
    assert campaigns.sweep_cancelled_sends(session) == 2
    session.expire_all()
    statuses = set(session.scalars(select(Send.status).where(Send.campaign_id == setup.campaign.id)))
    assert SendStatus.SENDING not in statuses and SendStatus.PENDING not in statuses
    assert SendStatus.CANCELLED in statuses


def test_a_claim_takes_abandoned_sends_first_then_the_lowest_pending_and_never_its_own(
    db: Database, session: Session
) -> None:
    """Two queries since migration 0008 (each answered by the index on (campaign_id, status, id)); together
    they take what the one query with OR took."""
    setup = _started(db, session, eligible=6)
    ids = sorted(session.scalars(select(Send.id).where(Send.campaign_id == setup.campaign.id)))
    dead = _claim(db, setup, worker="dead", size=2)
    mine = _claim(db, setup, worker="w", size=1)
    assert [c.send_id for c in dead] == ids[:2] and [c.send_id for c in mine] == [ids[2]]
    expired = utcnow() - timedelta(seconds=1)
    session.execute(update(Send).where(Send.id.in_([ids[1], ids[2]])).values(claimed_until=expired))
    session.commit()
    taken = _claim(db, setup, worker="w", size=3)
    # the dead worker's expired send first; w's own expired send is not taken again (w renewed it);
    # the dead worker's other send is still leased; then the lowest pending
    assert [c.send_id for c in taken] == [ids[1], ids[3], ids[4]]
    assert [c.attempts for c in taken] == [2, 1, 1]


def test_a_slow_rate_never_lets_a_queued_send_be_taken_twice(
    db: Database, session: Session, settings: Settings, sink: SmtpSink
) -> None:
    """Leases shorter than the time a send waits in the queue: the worker renews them, nobody re-takes them."""
    from zgoda.campaigns.settings_service import update_sending_settings

    setup = sending_setup(session, eligible=12)
    update_sending_settings(session, workspace=setup.workspace, soft_opt_in=False, rate_per_second=20)
    campaigns.send_campaign(session, campaign_id=setup.campaign.id)
    session.commit()
    sending.prepare(db, setup.campaign.id)
    settings.send_batch_size = 4
    settings.send_lease_seconds = 0.2  # the 12 sends take 0.6 s at 20 per second
    settings.send_parallel_tasks = 1
    outcome = sending.run(db, setup.campaign.id, settings, smtp=_smtp(sink), connections=2)
    assert (outcome.sent, outcome.failed, outcome.retried, outcome.stopped) == (12, 0, 0, "done")
    assert sink.received == 12
    session.expire_all()
    attempts = session.scalars(
        select(Send.attempts).where(Send.campaign_id == setup.campaign.id, Send.status == SendStatus.SENT)
    ).all()
    assert sorted(attempts) == [1] * 12, "every send was claimed once"


def test_renewing_leases_never_waits_for_a_row_the_group_commit_holds(fresh_database_url: str) -> None:
    """PostgreSQL: renewing while a commit holds some of the worker's rows skips them (waiting could deadlock)."""
    if not fresh_database_url.startswith("postgresql"):
        pytest.skip("row locks: PostgreSQL only (SQLite serialises whole transactions)")
    from sqlalchemy import text

    db = Database.from_url(fresh_database_url)
    with db.transaction() as session:
        setup = sending_setup(session, eligible=3)
        campaigns.send_campaign(session, campaign_id=setup.campaign.id)
    sending.prepare(db, setup.campaign.id)
    claimed = _claim(db, setup, worker="w", size=3)
    locked_id = claimed[0].send_id
    with db.engine.connect() as committer, db.transaction() as renewing:
        committer.execute(text("SELECT id FROM campaign_sends WHERE id = :i FOR UPDATE"), {"i": locked_id})
        bind_scope(renewing, workspace_id=setup.workspace.id, actor=Actor.system("test"))
        renewing.execute(text("SET LOCAL lock_timeout = '2s'"))  # a wait would fail the test, not hang it
        later = utcnow() + timedelta(hours=1)
        sending.renew_leases(renewing, setup.campaign.id, worker="w", until=later)
        renewed = dict(renewing.execute(select(Send.id, Send.claimed_until).where(Send.claimed_by == "w")).all())
        committer.rollback()
    assert renewed[locked_id] != later
    assert [renewed[c.send_id] for c in claimed[1:]] == [later, later]
    db.engine.dispose()


def test_a_kept_connection_lost_between_groups_is_replaced(
    fresh_database_url: str, settings: Settings, sink: SmtpSink
) -> None:
    """PostgreSQL: the group commit's connection waits between groups in a transaction begun ahead (its
    BEGIN sent early, answered while the next messages go out); when the server ends that session
    meanwhile, the next group replaces the connection and every message still goes out exactly once."""
    if not fresh_database_url.startswith("postgresql"):
        pytest.skip("the BEGIN sent ahead is PostgreSQL's (SQLite begins in-process)")
    from sqlalchemy import text

    db = Database.from_url(fresh_database_url)
    with db.transaction() as session:
        setup = _started(db, session, eligible=5)
    campaign_id = setup.campaign.id
    ended: list[int] = []

    def end_the_waiting_session(sent: int) -> None:
        if sent > 2:
            return
        with db.engine.connect() as admin:
            waiting: list[int] = []
            for _ in range(100):  # the BEGIN went out before this message's verdict: wait for the server's view
                waiting = list(
                    admin.execute(
                        text(
                            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND "
                            "state = 'idle in transaction' AND query LIKE '%BEGIN' AND pid <> pg_backend_pid()"
                        )
                    ).scalars()
                )
                admin.rollback()  # pg_stat_activity is read once per transaction
                if waiting:
                    break
                time.sleep(0.05)
            for pid in waiting:
                admin.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
            admin.commit()
        ended.extend(waiting)

    outcome = sending.run(db, campaign_id, settings, smtp=_smtp(sink), connections=1, on_sent=end_the_waiting_session)
    assert len(ended) == 2, "after each of the first two messages, the kept connection waited with its BEGIN"
    assert outcome.stopped == "done" and outcome.sent == 5
    assert sink.received == 5
    assert send_status_counts(db, campaign_id) == {"sent": 5, "refused": len(setup.refused)}
    db.engine.dispose()


def test_a_server_timeout_for_idle_transactions_only_costs_reconnects(
    fresh_database_url: str, settings: Settings, sink: SmtpSink
) -> None:
    """PostgreSQL: with ``idle_in_transaction_session_timeout`` shorter than the gaps between groups (a slow
    rate), the server ends the kept connection's session between groups; every group then takes a new
    one, and every message still goes out exactly once."""
    if not fresh_database_url.startswith("postgresql"):
        pytest.skip("idle_in_transaction_session_timeout is PostgreSQL's")
    from sqlalchemy import text

    db = Database.from_url(fresh_database_url)
    with db.engine.connect() as admin:
        name = admin.execute(text("SELECT current_database()")).scalar_one()
        # long enough for every other transaction of the run (a claim idles a few ms between its statements;
        # at 50 ms one was ended under load), shorter than the 1 s between groups at the rate below
        admin.execute(text(f'ALTER DATABASE "{name}" SET idle_in_transaction_session_timeout = 400'))
        admin.commit()
    db.engine.dispose()  # new connections take the setting
    with db.transaction() as session:
        setup = sending_setup(session, eligible=3)
        campaign_id = setup.campaign.id
        setup.workspace.settings = {**(setup.workspace.settings or {}), "sending": {"rate_per_second": 1}}
        campaigns.send_campaign(session, campaign_id=campaign_id)
    sending.prepare(db, campaign_id)

    outcome = sending.run(db, campaign_id, settings, smtp=_smtp(sink), connections=1)
    assert outcome.stopped == "done" and outcome.sent == 3
    assert sink.received == 3
    assert send_status_counts(db, campaign_id) == {"sent": 3, "refused": len(setup.refused)}
    db.engine.dispose()


def test_rows_are_locked_while_their_messages_are_under_way(fresh_database_url: str) -> None:
    """PostgreSQL: a message's row is locked (ours, the campaign sending) when it starts, so its group's
    UPDATE can go with the COMMIT unanswered. A row another worker took over is found not ours (its message
    gets no dot, the row stays theirs); a locked row cannot be taken over meanwhile; a campaign paused
    before the lock marks nothing and says so."""
    if not fresh_database_url.startswith("postgresql"):
        pytest.skip("row locks ahead of the group: PostgreSQL's kept connections only")
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    db = Database.from_url(fresh_database_url)
    with db.transaction() as session:
        setup = _started(db, session, eligible=4)
    campaign_id = setup.campaign.id
    claimed = _claim(db, setup, worker="w", size=4)
    first, taken, third, later = (c.send_id for c in claimed)
    with db.engine.begin() as other:
        other.execute(text("UPDATE campaign_sends SET claimed_by = 'other' WHERE id = :i"), {"i": taken})

    def message(send_id: int) -> sending.OutgoingMessage:
        return sending.OutgoingMessage(send_id, 0, f"ref{send_id}", "to@example.com", "from@example.com", b"", None)

    rows = sending._SentRows(
        db, worker="w", workspace_id=setup.workspace.id, campaign_id=campaign_id, quiet=sending._QuietGate()
    )
    try:
        for send_id in (first, taken, third):
            rows.want_lock(send_id)
        assert rows.lock_state(first) is None, "nothing is known before the lock's answer"
        deadline = time.monotonic() + 10
        while rows.pump() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (rows.lock_state(first), rows.lock_state(taken), rows.lock_state(third)) == (True, False, True)
        assert not rows.campaign_stopped, "the campaign is sending: the row was taken over"

        with db.engine.connect() as thief:  # a locked row cannot be taken over while its message is under way
            thief.execute(text("SET lock_timeout = '200ms'"))
            with pytest.raises(OperationalError, match="lock timeout"):
                thief.execute(text("UPDATE campaign_sends SET claimed_by = 'other' WHERE id = :i"), {"i": first})
            thief.rollback()

        group = [message(first), message(taken), message(third)]
        written = rows.write(group, dots=sending._Dots([]))
        assert written.owned == {f"ref{first}", f"ref{third}"} and not written.campaign_stopped
        rows.settle()
        assert send_status_counts(db, campaign_id)["sent"] == 2
        with db.engine.connect() as reader:
            owner = reader.execute(text("SELECT claimed_by, status FROM campaign_sends WHERE id = :i"), {"i": taken})
            assert owner.one() == ("other", "sending")

        with db.engine.begin() as pausing:
            pausing.execute(text("UPDATE campaigns SET status = 'paused' WHERE id = :i"), {"i": campaign_id})
        rows.want_lock(later)
        written = rows.write([message(later)], dots=sending._Dots([]))
        assert written.owned == frozenset() and written.campaign_stopped
        rows.settle()
        assert send_status_counts(db, campaign_id)["sent"] == 2
    finally:
        rows.close()
    db.engine.dispose()
