"""Sending a campaign: the audience frozen into send rows, the gate asked per message, SMTP with a group commit.

Never twice, never skipped (docs/sending.md):

1. ``prepare`` inserts one ``pending`` row per member of the audience; (campaign, contact) is unique.
2. A worker *claims* a batch: rows become ``sending`` with its name and a lease.
3. The gate decides each claimed row now (consent, suppression, restriction, list, workspace);
   refused rows are recorded with their reason and never sent.
4. One sending thread keeps K SMTP connections busy from a selector (delivery/channel.py): it writes
   each message up to the final dot, has the rows committed as ``sent`` (only those it still holds;
   every message prepared by then goes in one transaction, a group commit), and only then writes
   their dots. A server discards a DATA that never got its final dot, so a worker
   killed before that commit delivered nothing, and its rows are claimed again once the lease runs
   out; a worker killed after the commit leaves rows that are never sent again. The one moment left
   in doubt is between the commit and the dot: the message is then recorded as sent but may not
   have left. It is kept to a few microseconds of one thread: on PostgreSQL the dots follow the
   COMMIT onto the wire before its answer is read (``_SentRows._commit_with_dots``), and the builder
   threads stay off the interpreter lock meanwhile (``_QuietGate``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import selectors
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from select import select as wait_for_io
from typing import Any

import psycopg
from psycopg.adapt import PyFormat, Transformer
from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    bindparam,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Transaction
from sqlalchemy.orm import Session

from zgoda.accounts.models import Workspace
from zgoda.audiences.eligibility import Audience, Exclusion, audience_for, decision_query
from zgoda.audiences.filters import check_definition, compile_definition
from zgoda.audiences.models import ListMember
from zgoda.audit import service as audit
from zgoda.campaigns import links
from zgoda.campaigns.domains import signer_for
from zgoda.campaigns.footer import ConsentAsk, FooterContext
from zgoda.campaigns.message import compose_message
from zgoda.campaigns.models import Campaign, CampaignKind, CampaignStatus, Send, SendStatus
from zgoda.campaigns.rendering import CompiledTemplate, RenderedParts, compile_template
from zgoda.campaigns.service import contact_merge_values, merge_fields, merge_values, sender_identity
from zgoda.campaigns.tracking import add_tracking, tracking_consents
from zgoda.consent.models import Notice, Purpose, Source
from zgoda.contacts.models import Contact
from zgoda.core import sqlite_commit, tcp_hold
from zgoda.core.clock import utcnow
from zgoda.core.db import SQLITE_CHECKPOINT_PAGES, Database
from zgoda.core.errors import InvalidInput
from zgoda.core.settings import Settings
from zgoda.core.tenancy import Actor, bind_scope, unscoped
from zgoda.delivery.channel import Broken, Phase, SmtpChannel, Step, Verdict
from zgoda.delivery.dkim import DkimSigner
from zgoda.delivery.transport import (
    Prepared,
    SmtpConnection,
    SmtpConnectionError,
    SmtpOutcome,
    SmtpSettings,
    smtp_settings_from,
)
from zgoda.feedback.providers import provider_ref_headers

log = logging.getLogger("zgoda.sending")

MAX_ATTEMPTS = 3  # temporary SMTP failures before a send is given up as failed
LEFT_AUDIENCE = "left_audience"  # taken off the list (or out of the segment) after the campaign started
TOO_MANY_ATTEMPTS = "smtp_temporary_failures"


def worker_name() -> str:
    """A name for this sending run: host, process and a random part (a process may run several)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# --- preparing ---------------------------------------------------------------------------------


def prepare(database: Database, campaign_id: int) -> int:
    """Insert a pending send for every member of the campaign's audience not yet having one; how many."""
    with database.transaction() as session:
        campaign = _load(session, campaign_id)
        if campaign is None or campaign.status != CampaignStatus.SENDING:
            return 0
        workspace_id = campaign.workspace_id
        now = utcnow()
        if campaign.list_id is not None:
            members = select(
                ListMember.contact_id.label("contact_id"),
            ).where(ListMember.workspace_id == workspace_id, ListMember.list_id == campaign.list_id)
        else:
            assert campaign.segment_id is not None
            from zgoda.audiences.models import Segment

            segment = session.get(Segment, campaign.segment_id)
            assert segment is not None
            condition = compile_definition(session, check_definition(session, segment.definition))
            members = select(Contact.id.label("contact_id")).where(Contact.workspace_id == workspace_id, condition)
        audience = members.subquery()
        new_rows = select(
            literal(workspace_id, Integer),
            literal(campaign.id, Integer),
            audience.c.contact_id,
            literal(campaign.list_id, Integer),
            literal(SendStatus.PENDING.value, String),
            literal(0, Integer),
            literal(now, Send.created_at.type),
        ).where(
            ~exists().where(Send.campaign_id == campaign.id, Send.contact_id == audience.c.contact_id),
        )
        result = session.execute(
            insert(Send).from_select(
                ["workspace_id", "campaign_id", "contact_id", "list_id", "status", "attempts", "created_at"],
                new_rows.order_by(audience.c.contact_id),
            )
        )
        added = int(getattr(result, "rowcount", 0) or 0)
        if added and session.get_bind().dialect.name == "postgresql":
            # fresh statistics for the gate's query: on tables never analysed (a list filled a minute ago)
            # PostgreSQL plans it badly, 0.45 s a batch instead of 6 ms (docs/benchmarks.md)
            session.execute(text("ANALYZE contacts, list_members, consent_states, campaign_sends"))
        audit.record(
            session,
            action="campaign.prepare",
            object_type="campaign",
            object_id=campaign.id,
            summary={"sends": added},
        )
        return added


def _load(session: Session, campaign_id: int) -> Campaign | None:
    with unscoped(session):
        campaign = session.get(Campaign, campaign_id)
    if campaign is not None:
        bind_scope(session, workspace_id=campaign.workspace_id, actor=Actor.system("sending"))
    return campaign


# --- the per-campaign context --------------------------------------------------------------------


@dataclass
class CampaignContext:
    """What every message of one campaign shares, built once per sending run."""

    campaign_id: int
    workspace_id: int
    workspace_slug: str
    workspace_name: str
    campaign_name: str
    purpose_id: int
    purpose_label: str
    compiled: CompiledTemplate
    from_name: str
    from_email: str
    from_domain: str
    reply_to: str | None
    language: str
    sender_name: str
    postal_address: str
    signer: DkimSigner | None
    source_names: dict[int, str]
    secret: bytes
    base_url: str
    bounce_domain: str
    unsubscribe_mailto: bool
    provider: str
    rate_per_second: float | None
    ask: tuple[str, str] | None = None  # a consent request's notice: title and text


def campaign_context(session: Session, campaign: Campaign, settings: Settings) -> CampaignContext:
    """The shared context of a campaign (template compiled from the copy frozen at start)."""
    workspace = session.get(Workspace, campaign.workspace_id)
    purpose = session.get(Purpose, campaign.purpose_id)
    assert workspace is not None
    assert purpose is not None
    content = campaign.content or {}
    compiled = compile_template(
        subject=str(content.get("subject", "")),
        html=str(content.get("html", "")),
        text=content.get("text"),
        allowed_fields=content.get("merge_fields") or merge_fields(session),
    )
    sender_name, postal_address = sender_identity(workspace)
    from_domain = campaign.from_email.rsplit("@", 1)[1].lower()
    secret = settings.resolved_secret_key()
    sending = (workspace.settings or {}).get("sending") or {}
    rate = sending.get("rate_per_second")
    ask = None
    if campaign.kind == CampaignKind.CONSENT_REQUEST:
        notice = session.get(Notice, content.get("notice_id"))
        if notice is None or notice.purpose_id != purpose.id:
            raise InvalidInput("This consent request has no notice to show; start it again.", field="notice_id")
        ask = (notice.title, notice.text)
    return CampaignContext(
        campaign_id=campaign.id,
        workspace_id=workspace.id,
        workspace_slug=workspace.slug,
        workspace_name=workspace.name,
        campaign_name=campaign.name,
        purpose_id=purpose.id,
        purpose_label=purpose.name,
        compiled=compiled,
        from_name=campaign.from_name,
        from_email=campaign.from_email,
        from_domain=from_domain,
        reply_to=campaign.reply_to,
        language=campaign.language,
        sender_name=sender_name,
        postal_address=postal_address,
        signer=signer_for(session, from_domain=from_domain, secret=secret),
        source_names=dict(session.execute(select(Source.id, Source.name)).all()),
        secret=secret,
        base_url=settings.base_url,
        bounce_domain=(settings.bounce_domain or from_domain).lower(),
        unsubscribe_mailto=settings.unsubscribe_mailto,
        provider=settings.smtp_provider,
        rate_per_second=float(rate) if isinstance(rate, int | float) and rate > 0 else None,
        ask=ask,
    )


@dataclass
class OutgoingMessage:
    """One message ready for SMTP, and what its send row will record."""

    send_id: int
    contact_id: int
    ref: str
    rcpt_to: str
    mail_from: str
    data: bytes
    consent_event_id: int | None


@dataclass(frozen=True)
class Recipient:
    """A claimed send the gate allowed, with what its message needs as plain values (any thread may build it)."""

    send_id: int
    contact_id: int
    email: str
    merge_values: dict[str, Any]
    source_id: int | None
    consent_event_id: int | None
    tracked: bool = False


def recipient_for(
    contact: Contact,
    *,
    send_id: int,
    source_id: int | None,
    consent_event_id: int | None,
    tracked: bool = False,
) -> Recipient:
    """The recipient of one send, read from its contact while the contact's session is open."""
    assert contact.email is not None
    return Recipient(
        send_id=send_id,
        contact_id=contact.id,
        email=contact.email,
        merge_values=contact_merge_values(contact),
        source_id=source_id,
        consent_event_id=consent_event_id,
        tracked=tracked,
    )


def build_message(ctx: CampaignContext, recipient: Recipient, *, sign: bool = True) -> OutgoingMessage:
    """Render, add the footer and the headers, and sign one message (``sign=False``: leave that to the
    caller, ``ctx.signer.sign(message.data)``)."""
    ref = links.new_send_ref()
    link = links.LinkToken(
        workspace_id=ctx.workspace_id,
        contact_id=recipient.contact_id,
        purpose_id=ctx.purpose_id,
        send_id=recipient.send_id,
    )
    token = links.make_token(ctx.secret, link)
    unsubscribe = links.unsubscribe_url(ctx.base_url, token)
    source_id = recipient.source_id
    ask = None
    if ctx.ask is not None:
        confirm = links.make_token(ctx.secret, link, salt=links.CONSENT_REQUEST_SALT)
        ask = ConsentAsk(
            notice_title=ctx.ask[0], notice_text=ctx.ask[1], confirm_url=links.confirm_url(ctx.base_url, confirm)
        )
    footer = FooterContext(
        sender_name=ctx.sender_name,
        postal_address=ctx.postal_address,
        purpose_label=ctx.purpose_label,
        source_label=ctx.source_names.get(source_id) if source_id is not None else None,
        unsubscribe_url=unsubscribe,
        preferences_url=links.preferences_url(ctx.base_url, token),
        language=ctx.language,
        ask=ask,
    )
    parts = ctx.compiled.render(
        contact=recipient.merge_values,
        workspace_name=ctx.workspace_name,
        campaign_name=ctx.campaign_name,
        footer=footer,
    )
    if recipient.tracked:  # only under a granted profiling consent (see campaigns/tracking.py)
        parts = RenderedParts(
            subject=parts.subject,
            html=add_tracking(parts.html, base_url=ctx.base_url, secret=ctx.secret, token=token),
            text=parts.text,
            footer_attached=parts.footer_attached,
        )
    bounce_address = links.bounce_address(ref, ctx.bounce_domain)
    data = compose_message(
        parts=parts,
        from_address=ctx.from_email,
        from_name=ctx.from_name,
        to_address=recipient.email,
        reply_to=ctx.reply_to,
        message_id=links.message_id(ref, ctx.from_domain),
        return_path=bounce_address,
        list_unsubscribe_https=unsubscribe,
        list_unsubscribe_mailto=links.unsubscribe_mailto(ref, ctx.bounce_domain) if ctx.unsubscribe_mailto else None,
        list_id=f"{ctx.campaign_name} <campaign-{ctx.campaign_id}.{ctx.workspace_slug}.{ctx.from_domain}>",
        feedback_id=f"{ctx.campaign_id}:{ctx.workspace_slug}:zgoda",
        ref=ref,
        extra_headers=provider_ref_headers(ctx.provider, ref),
    )
    if sign and ctx.signer is not None:
        data = ctx.signer.sign(data)
    return OutgoingMessage(
        send_id=recipient.send_id,
        contact_id=recipient.contact_id,
        ref=ref,
        rcpt_to=recipient.email,
        mail_from=bounce_address,
        data=data,
        consent_event_id=recipient.consent_event_id,
    )


# --- claiming and deciding ----------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    send_id: int
    contact_id: int
    attempts: int


def claim(session: Session, campaign_id: int, *, worker: str, size: int, lease: float) -> list[Claimed]:
    """Take up to ``size`` sends that nobody holds (pending, or held by another worker whose lease ran out).

    This worker's own sends are renewed first (they may still be queued in its pipeline) and never
    taken again by it: a send is only ever under way once.
    """
    now = utcnow()
    renew_leases(session, campaign_id, worker=worker, until=now + timedelta(seconds=lease))
    # Two queries, each taking the lowest ids of one (campaign_id, status), which the index (campaign_id,
    # status, id) answers by reading just the rows taken (migration 0008). One condition with OR, or
    # statistics that expect many matching rows, made PostgreSQL walk the table's primary key instead,
    # filtering out every send of every earlier campaign: the lower bound (the first matching id, one
    # index probe) keeps that walk, should it be chosen, to the rows the claim takes.
    abandoned = _lowest(  # another worker's sends whose lease ran out (it died, or stalled): first, they waited
        campaign_id, SendStatus.SENDING, size, Send.claimed_until < now, Send.claimed_by != worker
    )
    ids = list(session.scalars(abandoned))
    if len(ids) < size:
        ids += session.scalars(_lowest(campaign_id, SendStatus.PENDING, size - len(ids)))
    if not ids:
        return []
    session.execute(
        update(Send)
        .where(Send.id.in_(ids))
        .values(
            status=SendStatus.SENDING,
            claimed_by=worker,
            claimed_until=now + timedelta(seconds=lease),
            attempts=Send.attempts + 1,
        ),
        execution_options={"synchronize_session": False},
    )
    rows = session.execute(select(Send.id, Send.contact_id, Send.attempts).where(Send.id.in_(ids)).order_by(Send.id))
    return [Claimed(send_id, contact_id, attempts) for send_id, contact_id, attempts in rows]


def _lowest(campaign_id: int, status: SendStatus, size: int, *conditions: ColumnElement[bool]) -> Select[int]:
    """The ids of up to ``size`` of the campaign's sends in ``status`` (and ``conditions``), lowest first, locked
    (rows another transaction holds are skipped)."""
    in_status = (Send.campaign_id == campaign_id, Send.status == status)
    first = select(func.min(Send.id)).where(*in_status).scalar_subquery()
    return (
        select(Send.id)
        .where(*in_status, Send.id >= first, *conditions)
        .order_by(Send.id)
        .limit(size)
        .with_for_update(skip_locked=True)
    )


def renew_leases(session: Session, campaign_id: int, *, worker: str, until: datetime) -> None:
    """Extend the lease of every send this worker holds in the campaign.

    Rows locked at this moment (the group commit is marking them sent) are skipped, not waited for:
    waiting would lock the worker's rows in another order than the commit does, a deadlock.
    """
    held = (
        select(Send.id)
        .where(Send.campaign_id == campaign_id, Send.status == SendStatus.SENDING, Send.claimed_by == worker)
        .with_for_update(skip_locked=True)
    )
    session.execute(
        update(Send).where(Send.id.in_(held)).values(claimed_until=until),
        execution_options={"synchronize_session": False},
    )


@dataclass(frozen=True)
class Decision:
    reason: str | None
    consent_event_id: int | None
    source_id: int | None


def decide(session: Session, audience: Audience, contact_ids: Sequence[int]) -> dict[int, Decision]:
    """The gate, now, for each contact: a reason to refuse, or none (with the consent event that allows it)."""
    rows = session.execute(decision_query(session, audience, contact_ids=contact_ids))
    decisions = {
        contact_id: Decision(reason, consent_event_id, source_id)
        for contact_id, source_id, reason, consent_event_id in rows
    }
    for contact_id in contact_ids:
        decisions.setdefault(contact_id, Decision(LEFT_AUDIENCE, None, None))
    return decisions


# --- the run -----------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """What one sending run did."""

    sent: int = 0
    refused: int = 0
    failed: int = 0
    retried: int = 0
    stopped: str = ""  # why the run ended: "done", "paused", "cancelled", "not_sending"
    by_reason: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    """Held while counting: the run's threads (claiming, building, sending) count into one outcome."""

    def count_reason(self, reason: str) -> None:
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1


class SmtpUnavailable(Exception):
    """Every connection failed in a row: the server is down or refuses us; try again later."""


RENDER_FAILED = "render_failed"  # the template could not be rendered for this contact (its row says why)


def run(
    database: Database,
    campaign_id: int,
    settings: Settings,
    *,
    worker: str | None = None,
    connections: int | None = None,
    smtp: SmtpSettings | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> RunOutcome:
    """Send a campaign's sends until none is left for this worker (or the campaign stops).

    The calling thread claims batches and asks the gate; a builder thread renders and signs the
    messages; one sending thread keeps K SMTP connections busy, the sent rows of the messages
    prepared at about the same time committed together (``_GroupCommit``). ``on_sent`` is called
    from the sending thread with the run's count so far.
    Raises ``SmtpUnavailable`` when every connection failed in a row.
    """
    worker = worker or worker_name()
    outcome = RunOutcome()
    pipeline: _Pipeline | None = None
    ctx: CampaignContext | None = None
    # sessions sharing one connection (the tests' outer transaction) must take turns across threads
    database_turn: AbstractContextManager[Any] = threading.Lock() if database.single_connection else nullcontext()
    try:
        while pipeline is None or not pipeline.stopping:
            busy = pipeline is not None and pipeline.busy
            with database_turn:
                step = _claim_and_decide(database, campaign_id, settings, worker, ctx, outcome, busy=busy)
            if isinstance(step, str):
                outcome.stopped = step
                break
            if isinstance(step, float):
                time.sleep(step)
                continue
            if step is None:  # nothing to claim while our own messages are under way: let them finish
                assert pipeline is not None
                pipeline.wait_until_idle()
                continue
            ctx, recipients = step
            if pipeline is None:
                pipeline = _Pipeline(
                    database,
                    ctx,
                    worker=worker,
                    connections=connections or settings.smtp_connections,
                    smtp=smtp or smtp_settings_from(settings),
                    queue_size=settings.send_batch_size,
                    rate=ctx.rate_per_second / max(1, settings.send_parallel_tasks) if ctx.rate_per_second else None,
                    lease=settings.send_lease_seconds,
                    outcome=outcome,
                    on_sent=on_sent,
                    database_turn=database_turn,
                )
            pipeline.feed(recipients)
    finally:
        if pipeline is not None:
            pipeline.shutdown()
    if pipeline is not None and pipeline.error is not None:
        raise pipeline.error
    if not outcome.stopped:  # the pipeline found the campaign paused or cancelled while committing
        with database.transaction() as session:
            campaign = _load(session, campaign_id)
            outcome.stopped = "not_found" if campaign is None else str(campaign.status)
    return outcome


COMMIT_SWITCH_SECONDS = 0.05


class _ThreadSwitches:
    """Python's thread switch interval, made long while any group commit of this process is under way.

    Between a COMMIT and the calls that keep its dots, a thread switch (the interpreter making the
    committing thread let a waiting one run, at the first bytecode after the COMMIT returns) stretches
    the moment in which a killed process leaves rows sent without their dots from a few microseconds
    to the other thread's whole turn. A waiting thread asks for such a switch only once it has waited
    the switch interval, so while a group commit is under way (``held``, from before its UPDATE) the
    interval is 50 ms: the threads already waiting get the interpreter while that statement runs
    without it, and none asks again before the dots are kept. Measured in the worker crash test (about
    410 group commits a run, SQLite): without the hold 2 to 13 commits a run were off the CPU between
    COMMIT and kept dots for 56 us to 1.1 ms, mostly waiting for the interpreter; with it 0 to 4, for
    56 to 72 us, only when the kernel ran another process. The committing thread itself still lets
    others run whenever it waits (the UPDATE, the COMMIT's answer; and the COMMIT itself where it
    cannot keep the interpreter lock, see core/sqlite_commit.py). Outside group commits the interval
    is the process's own (Python's default, 5 ms): the 0.1 ms the sender used to set for the same
    window cost CPU (10,000 messages, SQLite: 1.69-1.84 ms a message against 1.53-1.59 ms).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._outside = sys.getswitchinterval()

    @contextmanager
    def held(self) -> Iterator[None]:
        """No forced thread switch while this (or any other group commit of the process) is under way."""
        with self._lock:
            if not self._holders:
                self._outside = sys.getswitchinterval()
                sys.setswitchinterval(max(self._outside, COMMIT_SWITCH_SECONDS))
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if not self._holders:
                    sys.setswitchinterval(self._outside)


_THREAD_SWITCHES = _ThreadSwitches()


def _claim_and_decide(
    database: Database,
    campaign_id: int,
    settings: Settings,
    worker: str,
    ctx: CampaignContext | None,
    outcome: RunOutcome,
    *,
    busy: bool,
) -> str | float | tuple[CampaignContext, list[Recipient]] | None:
    """Claim and decide the next batch: its recipients; or None (nothing to claim, ours still busy);
    or seconds to wait (another worker holds the rest); or why the run ends.

    Three short transactions rather than one: the claim, the gate's reads, the refusals. On SQLite a
    writing transaction locks out every other writer, the group commit included, and the gate's
    query is the long part (measured: 26 ms a batch of 200, during which every connection waited).
    """
    with database.transaction() as session:
        campaign = _load(session, campaign_id)
        if campaign is None:
            return "not_found"
        if campaign.status != CampaignStatus.SENDING:
            return str(campaign.status)
        claimed = claim(
            session, campaign_id, worker=worker, size=settings.send_batch_size, lease=settings.send_lease_seconds
        )
        if not claimed:
            if busy:
                return None
            wait = _finish_or_wait(session, campaign)
            return "done" if wait is None else wait
        workspace_id = campaign.workspace_id
    try:
        with database.transaction(reads_only=True) as session:
            campaign = _load(session, campaign_id)
            if campaign is None:
                return "not_found"
            if ctx is None:
                ctx = campaign_context(session, campaign, settings)
            audience = audience_for(
                session,
                purpose_id=campaign.purpose_id,
                list_id=campaign.list_id,
                segment_id=campaign.segment_id,
                consent_request=campaign.kind == CampaignKind.CONSENT_REQUEST,
            )
            recipients, refusals, failures = _decide(session, audience, claimed)
        if refusals or failures:
            _record_refusals(database, workspace_id, worker, refusals, failures)
    except BaseException:
        # the claim is committed already: give the batch back (its attempt not counted) rather than
        # leave it to its lease, which would count an attempt the gate never made
        with contextlib.suppress(Exception):
            _give_back(database, [item.send_id for item in claimed], worker, workspace_id)
        raise
    with outcome.lock:
        outcome.refused += len(refusals)
        outcome.failed += len(failures)
        for row in (*refusals, *failures):
            outcome.count_reason(row["b_reason"])
    return ctx, recipients


def _finish_or_wait(session: Session, campaign: Campaign) -> float | None:
    """With nothing to claim: mark the campaign sent, or say how long until another worker's lease ends."""
    now = utcnow()
    held = session.execute(
        select(func.count(), func.min(Send.claimed_until)).where(
            Send.campaign_id == campaign.id, Send.status == SendStatus.SENDING
        )
    ).one()
    count, until = held
    if count and until is not None:
        return min(1.0, max(0.05, (until - now).total_seconds()))
    campaign.status = CampaignStatus.SENT
    campaign.finished_at = now
    campaign.updated_at = now
    counts = dict(
        session.execute(
            select(Send.status, func.count()).where(Send.campaign_id == campaign.id).group_by(Send.status)
        ).all()
    )
    audit.record(session, action="campaign.finish", object_type="campaign", object_id=campaign.id, summary=counts)
    return None


def _decide(
    session: Session, audience: Audience, claimed: list[Claimed]
) -> tuple[list[Recipient], list[dict[str, Any]], list[dict[str, Any]]]:
    """Ask the gate about every claimed send: the recipients of those allowed, the refusals, the failures."""
    contact_ids = [c.contact_id for c in claimed]
    decisions = decide(session, audience, contact_ids)
    tracked = tracking_consents(session, contact_ids)
    columns = (Contact.id, Contact.email, Contact.phone, Contact.first_name, Contact.last_name, Contact.attributes)
    contacts = {row[0]: row for row in session.execute(select(*columns).where(Contact.id.in_(contact_ids)))}
    refusals: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    recipients: list[Recipient] = []
    for item in claimed:
        decision = decisions[item.contact_id]
        contact = contacts.get(item.contact_id)
        reason = decision.reason
        if reason is None and (contact is None or not contact.email):
            reason = Exclusion.NO_ADDRESS.value
        if item.attempts > MAX_ATTEMPTS:
            failures.append({"b_id": item.send_id, "b_reason": TOO_MANY_ATTEMPTS})
            continue
        if reason is not None:
            refusals.append({"b_id": item.send_id, "b_reason": str(reason)})
            continue
        assert contact is not None
        recipients.append(
            Recipient(
                send_id=item.send_id,
                contact_id=item.contact_id,
                email=contact.email,
                merge_values=merge_values(
                    attributes=contact.attributes,
                    email=contact.email,
                    phone=contact.phone,
                    first_name=contact.first_name,
                    last_name=contact.last_name,
                ),
                source_id=decision.source_id,
                consent_event_id=decision.consent_event_id,
                tracked=item.contact_id in tracked,
            )
        )
    return recipients, refusals, failures


def _record_refusals(
    database: Database, workspace_id: int, worker: str, refusals: list[dict[str, Any]], failures: list[dict[str, Any]]
) -> None:
    """Record the gate's refusals (and the sends given up) on the rows this worker still holds."""
    now = utcnow()
    table = Send.__table__
    with database.transaction() as session:
        bind_scope(session, workspace_id=workspace_id, actor=Actor.system("sending"))
        for rows, status in ((refusals, SendStatus.REFUSED), (failures, SendStatus.FAILED)):
            if rows:
                session.connection().execute(
                    update(table)  # type: ignore[arg-type]
                    .where(table.c.id == bindparam("b_id"), table.c.claimed_by == worker)
                    .values(status=status.value, reason=bindparam("b_reason"), decided_at=now, claimed_by=None),
                    rows,
                )


# how long a prepared message may wait for the messages other connections are about to prepare
GROUP_WAIT_SECONDS = 0.002

# the selector key of the kept PostgreSQL connections while they owe answers (see _Pipeline._pump)
_DATABASE_ANSWER = object()

# PostgreSQL connections the group commit keeps, taking groups in turn: a COMMIT is made durable (a disk
# flush) on one while the next group's rows are locked on another (one: the next group waited for it)
KEPT_CONNECTIONS = 2

# one thread renders and signs ahead of the connections (two measured 3-7% slower: more GIL contention)
BUILD_THREADS = 1


class _Pipeline:
    """A builder thread turns recipients into signed messages; one sending thread keeps K SMTP connections busy.

    The sending thread drives every connection from one selector (delivery/channel.py): it writes a
    message up to its final dot, and whenever messages are prepared it commits them as sent in one
    transaction (the group commit, ``_GroupCommit``), whose writer then writes their final dots;
    it reads the verdicts as they come. That is the two-phase send of the module's docstring, with
    no thread per connection: on a busy interpreter K threads handed the interpreter lock to each
    other at every step of every message (docs/benchmarks.md, sending, fifth and sixth rounds).
    Opening a connection (connect, EHLO, TLS, login) blocks, so it runs on a short-lived thread.
    """

    def __init__(
        self,
        database: Database,
        ctx: CampaignContext,
        *,
        worker: str,
        connections: int,
        smtp: SmtpSettings,
        queue_size: int,
        rate: float | None,
        lease: float,
        outcome: RunOutcome,
        on_sent: Callable[[int], None] | None,
        database_turn: AbstractContextManager[Any],
    ) -> None:
        self.ctx = ctx
        self.database = database
        self.worker = worker
        self.outcome = outcome
        self.on_sent = on_sent
        self.error: BaseException | None = None
        self.database_turn = database_turn
        self.quiet = _QuietGate()
        self.committer = _GroupCommit(
            database,
            worker=worker,
            workspace_id=ctx.workspace_id,
            campaign_id=ctx.campaign_id,
            database_turn=database_turn,
            quiet=self.quiet,
        )
        self._connections = connections
        # a recipient is marked done (task_done) in _recipients only once its message is finished
        self._recipients: queue.Queue[Recipient | None] = queue.Queue(maxsize=max(queue_size, connections))
        # built ahead: room for bursts (at 2 per connection the builder waited for room 9% of its time)
        self._ready: queue.Queue[tuple[Recipient, OutgoingMessage] | None] = queue.Queue(maxsize=4 * connections)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._failures_in_a_row = 0
        self._unsent: list[int] = []  # sends taken off a queue after a stop (or paused): given back at shutdown
        self._pacer = _Pacer(rate)
        self._lease = lease
        self._renew_every = lease / 3
        self._renewed = time.monotonic()
        self._selector = selectors.DefaultSelector()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._wake_out.setblocking(False)
        self._selector.register(self._wake_in, selectors.EVENT_READ, None)
        self._wanting = False  # the sending thread has a free connection and found nothing ready
        self._opened: queue.SimpleQueue[tuple[SmtpChannel, BaseException | None]] = queue.SimpleQueue()
        self._opening = 0
        self._channels = [SmtpChannel(SmtpConnection(smtp), self._selector) for _ in range(connections)]
        self._prepared: list[SmtpChannel] = []
        # registered while the kept connections owe answers (and how many connections were made by then)
        self._database_sockets: tuple[int, list[int]] = (0, [])
        self._prepared_since = 0.0  # when the first message of the next group was prepared
        self._builders = [
            threading.Thread(target=self._build_loop, name=f"zgoda-build-{number}", daemon=True)
            for number in range(BUILD_THREADS)
        ]
        self._sender = threading.Thread(target=self._send_loop, name="zgoda-smtp", daemon=True)
        for thread in (*self._builders, self._sender):
            thread.start()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def busy(self) -> bool:
        """Whether any recipient fed to the threads is not finished yet."""
        return self._recipients.unfinished_tasks > 0

    def feed(self, recipients: Sequence[Recipient]) -> None:
        """Queue recipients for the builder threads; blocks while the queue is full (renewing the leases)."""
        for recipient in recipients:
            if not self._put(self._recipients, recipient, while_full=self._renew_leases_if_due):
                self._set_aside(recipient.send_id, done=False)

    def _renew_leases_if_due(self) -> None:
        """Extend the lease of every send this run holds: at a slow rate the queue holds them for long."""
        if time.monotonic() - self._renewed <= self._renew_every:
            return
        self._renewed = time.monotonic()
        with self.database_turn, self.database.transaction() as session:
            bind_scope(session, workspace_id=self.ctx.workspace_id, actor=Actor.system("sending"))
            until = utcnow() + timedelta(seconds=self._lease)
            renew_leases(session, self.ctx.campaign_id, worker=self.worker, until=until)

    def wait_until_idle(self) -> None:
        """Wait until every recipient fed is finished (or the run is stopping)."""
        done = self._recipients.all_tasks_done
        with done:
            while self._recipients.unfinished_tasks and not self._stop.is_set():
                done.wait(0.2)

    def shutdown(self) -> None:
        """Stop the threads (a message under way is finished) and give back what was never tried."""
        self._stop.set()
        self._drain_recipients()
        for _ in self._builders:
            self._recipients.put(None)
        for thread in self._builders:
            thread.join()
        self._drain_recipients()
        self._drain(self._ready, lambda item: item[0].send_id)  # (recipient, message) pairs built, never sent
        self._ready.put(None)
        self._wake()
        self._sender.join()
        self.committer.close()
        if self._unsent:
            try:
                with self.database_turn:
                    _give_back(self.database, self._unsent, self.worker, self.ctx.workspace_id)
            except Exception:  # the rows' leases run out and they are claimed again anyway
                log.exception("could not give back %d unsent sends", len(self._unsent))

    def _drain_recipients(self) -> None:
        self._drain(self._recipients, lambda recipient: recipient.send_id, stop_marks_done=True)

    def _drain(self, source: queue.Queue[Any], send_id: Callable[[Any], int], *, stop_marks_done: bool = False) -> None:
        """Empty a queue, setting aside the send of every item in it (each one a recipient not finished)."""
        while True:
            try:
                item = source.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._set_aside(send_id(item), done=True)
            elif stop_marks_done:
                self._recipients.task_done()

    def _set_aside(self, send_id: int, *, done: bool) -> None:
        """A send the run will not make after all (it is stopping): given back at shutdown."""
        with self._lock:
            self._unsent.append(send_id)
        if done:
            self._recipients.task_done()

    def _put(self, target: queue.Queue[Any], item: Any, *, while_full: Callable[[], None] | None = None) -> bool:
        """Put into a bounded queue, waiting while it is full (calling ``while_full`` now and then); False if
        the run stops meanwhile."""
        while not self._stop.is_set():
            try:
                target.put(item, timeout=0.2)
                return True
            except queue.Full:
                if while_full is not None:
                    while_full()
        return False

    def _wake(self) -> None:
        """Wake the sending thread from its selector (one byte on its own socket pair)."""
        with contextlib.suppress(OSError):  # full: a wake is already waiting
            self._wake_out.send(b"\0")

    # -- in the builder thread ------------------------------------------------------------------------

    def _build_loop(self) -> None:
        while True:
            recipient = self._recipients.get()
            if recipient is None:
                self._recipients.task_done()
                return
            try:
                if self._stop.is_set():
                    self._set_aside(recipient.send_id, done=True)
                    continue
                message = self._build(recipient)
            except BaseException as error:  # noqa: BLE001 - the run re-raises it in the calling thread
                self._recipients.task_done()
                self._fail(error)
                continue
            if message is None:
                self._recipients.task_done()
            elif not self._put(self._ready, (recipient, message)):
                self._set_aside(recipient.send_id, done=True)
            elif self._wanting:
                self._wanting = False
                self._wake()

    def _build(self, recipient: Recipient) -> OutgoingMessage | None:
        """The recipient's message; None when the template cannot be rendered for it (its row says why)."""
        try:
            signer = self.ctx.signer
            with self.quiet.step():
                message = build_message(self.ctx, recipient, sign=False)
                pending = signer.prepare(message.data) if signer is not None else None
            if signer is not None and pending is not None:
                # outside any step: the RSA signature, a third of a build, runs in OpenSSL without the
                # interpreter lock, so a group commit need not wait for it; the step after it is short
                signature = signer.signature(pending)
                with self.quiet.step():
                    message.data = pending.complete(signature)
            return message
        except InvalidInput as error:
            with self.outcome.lock:
                self.outcome.failed += 1
                self.outcome.count_reason(RENDER_FAILED)
            failed = {"status": SendStatus.FAILED, "reason": RENDER_FAILED, "smtp_reply": str(error)[:500]}
            self.committer.defer(recipient.send_id, failed, held=True)  # written by the sending thread
            self._wake()
            return None

    # -- in the sending thread ------------------------------------------------------------------------

    def _send_loop(self) -> None:
        try:
            self._serve()
        except BaseException as error:  # noqa: BLE001 - the run re-raises it in the calling thread
            self._fail(error)
            with contextlib.suppress(Exception):  # refusals and retries noted so far (their leases end anyway)
                self.committer.write_pending()
            for channel in self._channels:
                if channel.payload is not None:
                    if channel.phase not in (Phase.DOT, Phase.OPENING) and channel.awaiting is None:
                        channel.drop()  # never completed: the server discards it
                    self._set_aside(channel.payload[0].send_id, done=False)
                    self._finished(channel)
                if channel.awaiting is not None:  # its dot was written: its row stays sent
                    channel.awaiting = None
                    self._recipients.task_done()
        finally:
            for channel in self._channels:
                if channel.phase is Phase.OPENING:  # an opening one is its thread's (it ends on its own)
                    continue
                channel.detach()
                if channel.awaiting is not None:  # a verdict awaited (a message may follow its dot): no QUIT,
                    channel.connection.abandon(reset=False)  # but a close that still sends the dot
                else:
                    channel.connection.close()
            self._selector.close()
            self._wake_in.close()
            self._wake_out.close()

    def _serve(self) -> None:
        """The sending thread's loop: take built messages, advance every connection, commit, until shutdown."""
        closing = False
        while True:
            closing = closing or self._take_work()
            self._pump()
            if self._commit_prepared():
                closing = closing or self._take_work()  # the next envelopes right behind the dots
            self._pump()
            if closing and self._opening == 0 and self._all_finished():
                return
            for key, events in self._selector.select(self._timeout()):
                channel = key.data
                if channel is None:
                    with contextlib.suppress(OSError):
                        self._wake_in.recv(4096)
                    continue
                if channel is _DATABASE_ANSWER:  # read by the next _pump()
                    continue
                if events & selectors.EVENT_WRITE:
                    self._after(channel, channel.on_writable())
                if events & selectors.EVENT_READ and channel.phase not in (Phase.CLOSED, Phase.OPENING):
                    self._after(channel, channel.on_readable())
            now = time.monotonic()
            for channel in self._channels:
                if channel.deadline < now:
                    self._after(channel, channel.expire())

            while True:
                try:
                    channel, error = self._opened.get_nowait()
                except queue.Empty:
                    break
                self._opening -= 1
                self._on_opened(channel, error)

    def _pump(self) -> None:
        """Move the kept database connections on (see ``_GroupCommit.pump``), watching their sockets while
        answers are awaited."""
        sockets = self.committer.pump()
        # a replaced connection may have the same descriptor number as the one it replaced: compare both
        registration = (self.committer.connections_made, sockets)
        if registration == self._database_sockets:
            return
        for fileno in self._database_sockets[1]:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fileno)
        for fileno in sockets:
            self._selector.register(fileno, selectors.EVENT_READ, _DATABASE_ANSWER)
        self._database_sockets = registration

    def _all_finished(self) -> bool:
        return all(channel.payload is None and channel.awaiting is None for channel in self._channels)

    def _take_work(self) -> bool:
        """Give built messages to the free connections; True once the queue said there will be no more."""
        for channel in self._channels:
            if channel.payload is not None or channel.phase in (Phase.OPENING, Phase.RESET):
                continue
            if channel.phase is Phase.DOT and not channel.can_follow_the_dot:
                continue  # its verdict first (no PIPELINING, or the connection is due to rotate)
            if self._pacer.delay() > 0 and not self._stop.is_set():
                return False
            self._wanting = True
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                return False
            self._wanting = False
            if item is None:
                return True
            if self._stop.is_set():
                self._set_aside(item[0].send_id, done=True)
                continue
            self._pacer.take()
            channel.payload = item
            if channel.phase is Phase.CLOSED or (channel.phase is Phase.IDLE and channel.connection.due_for_rotation):
                self._open(channel)
            else:
                self._begin(channel)
        return False

    def _timeout(self) -> float | None:
        """How long the selector may wait: until the first reply overdue, the group's time to be written, or
        the pacer's next message."""
        deadline = min(channel.deadline for channel in self._channels)
        if self._groupable():
            deadline = min(deadline, self._prepared_since + GROUP_WAIT_SECONDS)
        timeout = None if deadline == math.inf else max(0.0, deadline - time.monotonic())
        delay = self._pacer.delay()
        if delay > 0 and any(channel.payload is None for channel in self._channels):
            timeout = delay if timeout is None else min(timeout, delay)
        return timeout

    def _open(self, channel: SmtpChannel) -> None:
        """Open (or rotate) the channel's connection on a thread of its own; ``_on_opened`` follows."""
        channel.detach()
        self._opening += 1
        threading.Thread(target=self._open_connection, args=(channel,), name="zgoda-smtp-open", daemon=True).start()

    def _open_connection(self, channel: SmtpChannel) -> None:
        error: BaseException | None = None
        try:
            if channel.connection.is_open:
                channel.connection.close()  # rotated: QUIT first
            channel.connection.open()
        except BaseException as failure:  # noqa: BLE001 - the sending thread decides what it means
            error = failure
        self._opened.put((channel, error))
        self._wake()

    def _on_opened(self, channel: SmtpChannel, error: BaseException | None) -> None:
        if error is None:
            channel.opened()
        else:
            channel.phase = Phase.CLOSED
        if channel.payload is None:
            return
        if error is None:
            if self._stop.is_set():
                self._set_aside(channel.payload[0].send_id, done=False)
                self._finished(channel)
            else:
                self._begin(channel)
        elif isinstance(error, SmtpConnectionError):
            self._after(channel, [Broken(error)])
        else:
            self._set_aside(channel.payload[0].send_id, done=False)
            self._finished(channel)
            self._fail(error)

    def _begin(self, channel: SmtpChannel) -> None:
        message: OutgoingMessage = channel.payload[1]
        self.committer.want_lock(message.send_id)
        self._after(channel, channel.start(message.mail_from, message.rcpt_to, message.data))

    def _after(self, channel: SmtpChannel, steps: list[Step]) -> None:
        """Act on what happened to the channel's messages, in order.

        A verdict does not wait for the answer to its row's COMMIT (on PostgreSQL it is read whenever it
        arrives, :meth:`_pump`): should that COMMIT have failed, the row is marked sent again (its dot went
        out), and row updates a verdict asks for are written after that."""
        for step in steps:
            if isinstance(step, Verdict) and channel.awaiting is not None:  # the message behind the current one
                self._verdict(channel.awaiting[1], step)
                channel.awaiting = None
                self._recipients.task_done()
            else:
                self._after_step(channel, step)

    def _after_step(self, channel: SmtpChannel, step: Step) -> None:
        """Act on what happened to the channel's current message."""
        message: OutgoingMessage = channel.payload[1]
        if isinstance(step, Prepared):
            self._failures_in_a_row = 0
            if not self._prepared:
                self._prepared_since = time.monotonic()
            if channel not in self._prepared:  # dropped and prepared again with another message meanwhile
                self._prepared.append(channel)
            return
        if isinstance(step, Verdict):
            self._verdict(message, step)
        elif isinstance(step, Broken):
            if step.stale:  # the server had closed it while idle: nothing was accepted; a fresh one, once
                self._open(channel)
                return
            with self.outcome.lock:
                self.outcome.retried += 1
            retry = {  # the server was never reached (or the connection broke): not an attempt
                "status": SendStatus.PENDING,
                "claimed_by": None,
                "claimed_until": None,
                "attempts": Send.attempts - 1,
                "smtp_reply": str(step.error)[:500],
            }
            self.committer.defer(message.send_id, retry, held=True)
            if not step.after_previous:  # a connection lost behind a dot was working: reopening it is no failure
                self._connection_failed(step.error)
        else:  # refused before the dot
            self._failures_in_a_row = 0
            with self.outcome.lock:
                values = _after_refusal(step, self.outcome)
            self.committer.defer(message.send_id, values, held=True)
        self._finished(channel)

    def _finished(self, channel: SmtpChannel) -> None:
        self.committer.forget(channel.payload[0].send_id)
        channel.payload = None
        self._recipients.task_done()

    def _group_ready(self) -> bool:
        """Whether to write the group now: nothing else is about to be prepared, or its first has waited long
        enough. Fewer, larger groups: less database work a message, and fewer moments in doubt."""
        self._prepared = [channel for channel in self._prepared if channel.phase is Phase.PREPARED]
        if not self._prepared:  # (one refused or broken while it waited is no longer prepared)
            return self.committer.has_pending
        if not self._groupable():  # the rows' locks are awaited
            return False
        if time.monotonic() - self._prepared_since >= GROUP_WAIT_SECONDS:
            return True
        return not any(channel.phase in (Phase.ENVELOPE, Phase.BODY) for channel in self._channels)

    def _commit_prepared(self) -> bool:
        """Commit the prepared messages as sent (and whatever else waits to be written); their dots follow.

        True if any dot was written (a connection may take its next message right behind it)."""
        if not self._group_ready():
            return False
        group = self._groupable()
        self._prepared = [channel for channel in self._prepared if channel not in group]  # (all PREPARED)
        if not group and not self.committer.has_pending:
            return False
        entries = [(channel, self.committer.hand_in(channel.payload[1], channel.connection)) for channel in group]
        try:
            self.committer.write_pending()
        except BaseException as error:  # noqa: BLE001 - the run re-raises it in the calling thread
            for channel, _ in entries:
                if channel.connection.is_prepared:
                    channel.drop()  # never completed: the server discards it, the row's lease ends
                    self._finished(channel)
                else:  # its dot was written (the row then stays sent), or the failed commit dropped it
                    self._after(channel, channel.dot_written())
            self._fail(error)
            return False
        for channel, entry in entries:
            if entry.owned:
                self._after(channel, channel.dot_written())
                if channel.phase is Phase.DOT:  # its verdict awaited: the channel may take the next message
                    channel.awaiting, channel.payload = channel.payload, None
                continue
            channel.drop()  # no final dot: the server discards the message
            if entry.campaign_stopped:  # paused or cancelled meanwhile: nothing more goes out
                self._set_aside(channel.payload[0].send_id, done=False)
                self._stop.set()
            # otherwise another worker took the row over after our lease ran out
            self._finished(channel)
        return any(entry.owned for _, entry in entries)

    def _groupable(self) -> list[SmtpChannel]:
        """The prepared messages that can join a group: their rows' locks answered (where rows are locked)."""
        lock_state = self.committer.lock_state
        return [
            channel
            for channel in self._prepared
            if channel.phase is Phase.PREPARED and lock_state(channel.payload[1].send_id) is not None
        ]

    def _verdict(self, message: OutgoingMessage, verdict: Verdict) -> None:
        """The server's answer to a committed message's final dot."""
        reply = verdict.outcome  # None: unknown; recorded as sent, as it may have been delivered
        if reply is not None and reply.code < 0:
            reply = None  # a garbled answer: it may have been delivered too
        with self.outcome.lock:
            self.outcome.sent += 1
            sent = self.outcome.sent
        if reply is not None and not reply.accepted:
            self._refused_at_the_dot(message, reply)
            return
        if self.on_sent is not None:
            with self.database_turn:  # a callback may use the database (the tests' one connection)
                self.on_sent(sent)

    def _refused_at_the_dot(self, message: OutgoingMessage, reply: SmtpOutcome) -> None:
        """The server refused the message at its final dot: the row says so (it was not delivered)."""
        outcome = self.outcome
        values: dict[str, Any] = {"smtp_reply": f"{reply.code} {reply.text}"[:500]}
        with outcome.lock:
            outcome.sent -= 1
            if reply.permanent:
                values.update(status=SendStatus.FAILED, reason=f"smtp_{reply.enhanced_status or reply.code}")
                outcome.failed += 1
                outcome.count_reason(values["reason"])
            else:
                values.update(status=SendStatus.PENDING, ref=None)  # a new message with a new ref next time
                outcome.retried += 1
        self.committer.defer(message.send_id, values, held=False)

    def _connection_failed(self, error: SmtpConnectionError) -> None:
        self._failures_in_a_row += 1
        if self._failures_in_a_row >= self._connections:
            self._fail(SmtpUnavailable(str(error)))

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = error
        self._stop.set()


class _QuietGate:
    """Keeps the builder threads off the interpreter while a group commit is between its COMMIT and its dots.

    Rows are sent once COMMIT is durable, but delivered only when their final dots are written: a
    process killed in between leaves them recorded as sent, never delivered. Builders render, compose
    and sign in Python; if they hold the interpreter lock when COMMIT returns, the committing thread
    waits for it (measured, the commit call's 90th percentile: 2.0 ms with builders running, 0.84 ms
    with this gate).
    So a build is a ``step`` that waits while a commit is ``critical``, and a commit waits for the
    builds under way to end before it sends COMMIT. The RSA signature (a third of a build) is left
    out of the steps: OpenSSL makes it without the interpreter lock, and a builder coming back from it
    during a commit runs only to the next step's entry, where it waits. Measured (docs/benchmarks.md,
    sending, eleventh round): 4-7% more messages a second, and the moment in doubt about as long as
    with the signature inside a step, on both databases.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._building = 0
        self._committing = False

    @contextmanager
    def step(self) -> Iterator[None]:
        with self._changed:
            while self._committing:
                self._changed.wait()
            self._building += 1
        try:
            yield
        finally:
            with self._changed:
                self._building -= 1
                if not self._building:
                    self._changed.notify_all()

    @contextmanager
    def critical(self) -> Iterator[None]:
        with self._changed:
            self._committing = True
            while self._building:
                self._changed.wait()
        try:
            yield
        finally:
            with self._changed:
                self._committing = False
                self._changed.notify_all()


@dataclass
class _Entry:
    """One message (or row update) in a group commit, and what became of it."""

    message: OutgoingMessage | None = None  # to mark sent
    connection: SmtpConnection | None = None  # the message's, waiting for its final dot
    send_id: int = 0  # or a row to update with ``values``
    values: dict[str, Any] | None = None
    held: bool = True  # the update applies only while this worker holds the row
    owned: bool = False  # marked sent by the group (set once it is written)
    campaign_stopped: bool = False  # the campaign was no longer sending when the group was written


class _GroupCommit:
    """Commits what the sending thread has ready, many rows per transaction.

    The sending thread hands in every prepared message (and defers row updates), then writes them
    all in one transaction (``write_pending``): a commit, the one part of sending no connection can
    overlap with its own message, is shared by every connection that reached it at about the same
    time. Other threads only defer row updates (the builder's render failures): the sending thread
    alone writes groups, so the dots on its sockets are written by no other thread.
    """

    def __init__(
        self,
        database: Database,
        *,
        worker: str,
        workspace_id: int,
        campaign_id: int,
        database_turn: AbstractContextManager[Any],
        quiet: _QuietGate,
    ) -> None:
        self.database = database
        self.worker = worker
        self.workspace_id = workspace_id
        self.campaign_id = campaign_id
        self.database_turn = database_turn
        self._lock = threading.Lock()  # the builder thread defers updates while the sending thread writes
        self._pending: list[_Entry] = []
        self._sent_rows = _SentRows(
            database, worker=worker, workspace_id=workspace_id, campaign_id=campaign_id, quiet=quiet
        )

    def hand_in(self, message: OutgoingMessage, connection: SmtpConnection) -> _Entry:
        """Hand in a prepared message to be committed as sent with the next group (``write_pending``).

        The committing thread writes its final dot on ``connection`` right after the commit, so that a
        process killed in between leaves as few messages as possible recorded as sent but not delivered.
        """
        entry = _Entry(message=message, connection=connection)
        with self._lock:
            self._pending.append(entry)
        return entry

    def defer(self, send_id: int, values: dict[str, Any], *, held: bool) -> None:
        """Other values for a row (a refusal, a retry), written with the next group (``write_pending``);
        if ``held``, only while this worker holds the row."""
        with self._lock:
            self._pending.append(_Entry(send_id=send_id, values=values, held=held))

    @property
    def has_pending(self) -> bool:
        """Whether anything handed in or deferred waits to be written."""
        return bool(self._pending)

    def write_pending(self) -> None:
        """Write everything handed in or deferred so far as one group (the sending thread's alone); each
        message's entry then says whether it was marked sent. An error leaves them all unmarked."""
        with self._lock:
            group, self._pending = self._pending, []
        if not group:
            return
        with self.database_turn:
            written = self._write(group)
        for member in group:
            if member.message is not None:
                member.owned = member.message.ref in written.owned
                member.campaign_stopped = written.campaign_stopped and not member.owned

    def _write(self, group: list[_Entry]) -> _Written:
        """Write a group: which messages were marked sent, and whether the campaign had stopped.

        Other values (refusals, retries) go in a transaction of their own (first; on PostgreSQL after
        the sent rows' COMMIT, which lets go the locks that may hold their rows): they deliver
        nothing, so they need no final dots and stay out of the sent rows' commit, whose moment the
        dots must share. Nothing is marked sent in a campaign that is no longer sending (paused or
        cancelled), so no final dot is written after a pause; a send put back in the queue by a
        cancelled campaign is cancelled.
        """
        updates = [entry for entry in group if entry.values is not None]
        messages = [entry.message for entry in group if entry.message is not None]
        if self.overlaps:  # rows may be locked by the kept connection's transaction: its COMMIT first
            written = self._sent_rows.write(messages, dots=_Dots(group))
            if updates:
                # and its answer: a COMMIT that did not happen (its UPDATE failed) holds the locks until
                # its connection is given up, which only this thread can do
                self._sent_rows.settle()
                self._write_updates(updates)
            return written
        if updates:
            self._write_updates(updates)
        if not messages:
            return _Written(owned=frozenset(), campaign_stopped=False)
        return self._sent_rows.write(messages, dots=_Dots(group))

    def _write_updates(self, updates: list[_Entry]) -> None:
        now = utcnow()
        with self.database.transaction() as session:
            bind_scope(session, workspace_id=self.workspace_id, actor=Actor.system("sending"))
            status = session.scalar(select(Campaign.status).where(Campaign.id == self.campaign_id))
            for entry in updates:
                assert entry.values is not None
                statement = update(Send).where(Send.id == entry.send_id)
                values = dict(entry.values)
                if status == CampaignStatus.CANCELLED and values.get("status") == SendStatus.PENDING:
                    values = {"status": SendStatus.CANCELLED, "claimed_by": None, "claimed_until": None}
                    values["smtp_reply"] = entry.values.get("smtp_reply")
                if entry.held:
                    statement = statement.where(Send.claimed_by == self.worker)
                    values["decided_at"] = now
                session.execute(statement.values(**values), execution_options={"synchronize_session": False})

    @property
    def overlaps(self) -> bool:
        """Whether rows are locked while their messages are under way (PostgreSQL's connection kept for the
        run): the kept connection then has answers to wait for between groups (:meth:`pump`)."""
        return self._sent_rows.locks_rows

    def want_lock(self, send_id: int) -> None:
        """A message starts: its row is to be locked ahead of its group (where rows are locked)."""
        if self.overlaps:
            self._sent_rows.want_lock(send_id)

    def forget(self, send_id: int) -> None:
        """A message ends without a group: its row needs no lock."""
        if self.overlaps:
            self._sent_rows.forget(send_id)

    def lock_state(self, send_id: int) -> bool | None:
        """Whether the message can join a group: its row is locked (True) or known not ours (False)."""
        return self._sent_rows.lock_state(send_id) if self.overlaps else True

    def pump(self) -> list[int]:
        """Move the kept connections on (see ``_SentRows.pump``): the sockets to watch for awaited answers."""
        return self._sent_rows.pump() if self.overlaps else []

    @property
    def connections_made(self) -> int:
        """How many kept connections were opened so far (a new one may reuse an old one's descriptor)."""
        return self._sent_rows.connections_made

    def close(self) -> None:
        self._sent_rows.close()


@dataclass(frozen=True)
class _Written:
    """What a group commit did: the refs of the messages it marked sent; whether the campaign had stopped."""

    owned: frozenset[str]
    campaign_stopped: bool


class _Dots:
    """The final dots of a group's messages: written held right after the COMMIT, then let go together."""

    def __init__(self, group: list[_Entry]) -> None:
        self._group = group
        self._written: list[SmtpConnection] = []
        self._held: list[SmtpConnection] = []

    def hold(self, owned: frozenset[str]) -> None:
        """Hold what the connections of the messages marked sent write next (their dots), ahead of writing."""
        for member in self._group:
            message, connection = member.message, member.connection
            if connection is not None and message is not None and message.ref in owned:
                connection.hold_dot()
                self._held.append(connection)

    def write(self, owned: frozenset[str], *, held: bool, drop_if_killed: bool = False) -> None:
        """Write the dot of every message marked sent (``owned``), held in the kernel if ``held`` (and then
        dropped, not sent, if the process dies before ``keep_if_killed``, with ``drop_if_killed``)."""
        for member in self._group:
            message, connection = member.message, member.connection
            if connection is not None and message is not None and message.ref in owned:
                connection.write_dot(held=held, drop_if_killed=drop_if_killed)
                self._written.append(connection)

    def keep_if_killed(self) -> None:
        """From now on the held dots go out even if the process dies."""
        for connection in self._written:
            connection.keep_dot_if_killed()

    def release(self) -> None:
        """Let the held dots go out (and release connections held for a dot never written)."""
        for connection in self._written:
            connection.release_dot()
        for connection in self._held:
            if connection not in self._written:
                connection.release_dot()

    def abandon(self) -> None:
        """Drop the held dots unsent (the connections are reset): their messages are never delivered."""
        for connection in self._written:
            connection.abandon()


def _flush(pgconn: Any) -> None:
    """Hand everything libpq has buffered for the server to the kernel (psycopg makes every connection
    non-blocking, so ``send_query`` may return with part of the query still in libpq's buffer)."""
    while pgconn.flush():
        wait_for_io([], [pgconn.socket], [])


def _answered(pgconn: Any) -> bool:
    """Whether a PostgreSQL connection has every answer to what was sent (reading what arrived, not waiting)."""
    pgconn.consume_input()
    return not pgconn.is_busy()


def _read_what_arrived(pgconn: Any) -> None:
    """Read whatever a PostgreSQL connection has received without asking (libpq reads a server's
    "terminating connection" error in one call and notices the end of the stream only in the next, which
    then raises ``psycopg.OperationalError``). Nothing arrived: no system call but one poll."""
    for _ in range(3):
        if not wait_for_io([pgconn.socket], [], [], 0)[0]:
            return
        pgconn.consume_input()


@dataclass
class _Owed:
    """Answers a kept PostgreSQL connection has not read yet: a BEGIN alone (``rows`` None), or a group's
    ``UPDATE; COMMIT; BEGIN`` with the rows it marks sent (no UPDATE when none; marked again should the
    COMMIT turn out to have failed)."""

    pgconn: Any
    rows: list[tuple[Any, ...]] | None

    @property
    def expected(self) -> list[bytes]:
        """The command tags of the answers, in order, when all went well."""
        if self.rows is None:
            return [b"BEGIN"]
        return ([f"UPDATE {len(self.rows)}".encode()] if self.rows else []) + [b"COMMIT", b"BEGIN"]


_QUERY_FRAMING = 6  # a simple query on the wire: its type byte, its length (4 bytes), the text, a NUL


@dataclass
class _Kept:
    """One of the PostgreSQL connections the group commit keeps for the run, and what it holds."""

    connection: Connection | None = None
    handle: socket.socket | None = None  # a handle on its socket, to hold its COMMIT (core/tcp_hold.py)
    handle_of: Any = None  # the libpq connection ``handle`` is on
    owed: _Owed | None = None  # answers it has not read yet
    locking: list[int] | None = None  # the send ids of a lock whose answer is awaited
    locked: set[int] = field(default_factory=set)  # the send ids whose rows its transaction holds
    locks_taken: bool = False  # a lock was sent in its transaction under way
    lock_prepared_on: Any = None  # the libpq connection the lock statement is prepared on

    @property
    def driver(self) -> Any:
        assert self.connection is not None
        return self.connection.connection.dbapi_connection

    def socket_for(self, pgconn: Any) -> socket.socket | None:
        """A handle on the connection's socket (made once per connection): None if it is not TCP."""
        if self.handle_of is not pgconn:
            self.close_socket()
            self.handle, self.handle_of = tcp_hold.borrow_socket(pgconn.socket), pgconn
        return self.handle

    def close_socket(self) -> None:
        if self.handle is not None:
            self.handle.close()
        self.handle, self.handle_of = None, None


class _SentRows:
    """Marks rows sent through connections kept for the run: the group commit's hot path.

    PostgreSQL: two kept connections, driven on the driver, take groups in turn; a message's row is
    locked when the message starts, and the group's UPDATE goes unanswered with its COMMIT
    (:meth:`_write_kept`). Other databases: one UPDATE per row (by id, still held by this worker, in
    its workspace, while the campaign is sending: a row another worker took over after this one's lease
    ran out matches nothing and stays theirs), written once as SQL for the driver: through a Session
    and a compiled statement it cost several times the database's own work. On a database whose
    sessions share one connection (the tests' outer transaction) it runs there, in a savepoint.
    """

    def __init__(
        self, database: Database, *, worker: str, workspace_id: int, campaign_id: int, quiet: _QuietGate
    ) -> None:
        self.database = database
        self.worker = worker
        self.workspace_id = workspace_id
        self.campaign_id = campaign_id
        self.quiet = quiet
        dialect = database.engine.dialect
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        table = Send.__table__.name  # type: ignore[attr-defined]
        campaigns = Campaign.__table__.name  # type: ignore[attr-defined]
        sending = CampaignStatus.SENDING.value
        self.status_sql = f"SELECT status FROM {campaigns} WHERE id = {mark}"
        self.sql = (
            f"UPDATE {table} SET status = {mark}, ref = {mark}, consent_event_id = {mark}, sent_at = {mark}, "
            f"decided_at = {mark}, claimed_by = NULL, claimed_until = NULL "
            f"WHERE id = {mark} AND workspace_id = {mark} AND claimed_by = {mark} AND status = {mark} "
            f"AND EXISTS (SELECT 1 FROM {campaigns} WHERE id = {campaign_id:d} AND status = '{sending}')"
        )
        self.owned_sql = f"SELECT ref FROM {table} WHERE ref = {mark}"
        # rows whose dots went out are marked sent whatever became of the campaign meanwhile
        self.remark_sql = self.sql.split(" AND EXISTS ")[0]
        # PostgreSQL: the rows of messages under way locked in the kept connection's transaction (ours, and
        # the campaign sending), so that the group's UPDATE can go with its COMMIT, unanswered.
        self.table = table
        self.lock_sql = (
            f"SELECT s.id FROM {table} AS s WHERE s.id = ANY($1::bigint[]) AND s.workspace_id = $2 "
            f"AND s.claimed_by = $3 AND s.status = '{SendStatus.SENDING.value}' "
            f"AND EXISTS (SELECT 1 FROM {campaigns} WHERE id = {campaign_id:d} AND status = '{sending}') "
            f"FOR UPDATE OF s"
        ).encode()
        self.lock_statement = f"zgoda_lock_sends_{campaign_id:d}".encode()
        # PostgreSQL: the whole group in one statement (arrays unnested), which names the rows it marked:
        # one plan and one execution instead of one per row (measured: the group's UPDATE was two thirds
        # of the group commit's time, and the group commit half of every connection's).
        self.group_sql = (
            f"UPDATE {table} AS s SET status = '{SendStatus.SENT.value}', ref = v.ref, consent_event_id = v.event_id, "
            f"sent_at = %s, decided_at = %s, claimed_by = NULL, claimed_until = NULL "
            f"FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) AS v(id, ref, event_id) "
            f"WHERE s.id = v.id AND s.workspace_id = %s AND s.claimed_by = %s "
            f"AND s.status = '{SendStatus.SENDING.value}' "
            f"AND EXISTS (SELECT 1 FROM {campaigns} WHERE id = {campaign_id:d} AND status = '{sending}') "
            f"RETURNING s.ref"
        )
        processor = Send.__table__.c.sent_at.type.bind_processor(dialect)
        self.to_database: Callable[[datetime], Any] = processor or (lambda value: value)
        self.sends_commit_first = dialect.name == "postgresql"
        self._connection: Connection | None = None  # SQLite: the connection kept for the run
        # PostgreSQL: the connections kept for the run, taking groups in turn (one forms the next group
        # while the last one's COMMIT is still being made durable on another)
        self._kept = tuple(_Kept() for _ in range(KEPT_CONNECTIONS))
        self._forming = 0  # which one: its transaction holds the locks of the messages under way
        self.connections_made = 0
        self._wanted: dict[int, None] = {}  # send ids whose rows are to be locked (an ordered set)
        self._not_ours: set[int] = set()  # send ids whose rows a lock found not ours
        self.campaign_stopped = False  # a lock found the campaign no longer sending

    @property
    def locks_rows(self) -> bool:
        """PostgreSQL on connections of its own (not the tests' one shared connection): rows are locked ahead
        and groups written on the kept connections (:meth:`_write_kept`)."""
        return self.sends_commit_first and not isinstance(self.database.bind, Connection)

    def _row(self, message: OutgoingMessage, now: Any) -> tuple[Any, ...]:
        return (
            SendStatus.SENT.value,
            message.ref,
            message.consent_event_id,
            now,
            now,
            message.send_id,
            self.workspace_id,
            self.worker,
            SendStatus.SENDING.value,
        )

    def write(self, messages: list[OutgoingMessage], *, dots: _Dots) -> _Written:
        """Mark the messages sent and commit; with the commit, the final dots of those marked."""
        now = self.to_database(utcnow())
        rows = [self._row(m, now) for m in messages]
        bind = self.database.bind
        if self.locks_rows:
            return self._write_kept(messages, now, dots)
        transaction: Transaction
        if isinstance(bind, Connection):
            connection, transaction = bind, bind.begin_nested()
        else:
            if self._connection is None or self._connection.closed or self._connection.invalidated:
                self._connection = bind.connect()
                # SQLite checkpoints its log inside the COMMIT that fills it, after the commit is durable and
                # before this thread could keep its dots: a process killed during that copy left rows sent
                # without dots. This connection never checkpoints; the others (claims, refusals) still do.
                self._sqlite_pragma("wal_autocheckpoint=0")
            connection = self._connection
            transaction = connection.begin()
        try:
            with _THREAD_SWITCHES.held():
                if self.sends_commit_first:
                    written = self._mark_group(connection.connection.dbapi_connection, messages, now)
                else:
                    written = self._mark_rows(connection, messages, rows)
                with self.quiet.critical():
                    own = None if isinstance(bind, Connection) else connection.connection.dbapi_connection
                    self._dots_then_commit(transaction, written, dots, own_connection=own)
            if transaction.is_active:  # SQLite's own connection: the driver has committed; this closes ours
                transaction.commit()
        except BaseException:
            if transaction.is_active:
                transaction.rollback()
            raise
        return written

    def _write_kept(self, messages: list[OutgoingMessage], now: Any, dots: _Dots) -> _Written:
        """PostgreSQL, on the connection kept for the run: the group's rows were locked while their messages
        were under way (:meth:`pump`), so their UPDATE cannot miss and goes with ``COMMIT; BEGIN`` and the
        dots, its answers read later (:meth:`settle`). A message whose row was not ours (taken over by
        another worker, or the campaign stopped) is not marked and gets no dot. With no message, the
        locks taken are let go (a COMMIT alone), so that other row updates may follow.

        Driven on the driver itself, not through SQLAlchemy's: psycopg would send a BEGIN before the
        UPDATE and wait for it, and would not let the COMMIT's answer wait (docs/benchmarks.md, sending,
        seventh and eighth rounds).
        """
        kept = self._kept[self._forming]
        self._wait_idle(kept)
        if kept.connection is not None and not self._alive(kept):  # its locks went with it
            self._discard(kept)
        if any(m.send_id not in kept.locked and m.send_id not in self._not_ours for m in messages):
            self._wanted.update(dict.fromkeys(m.send_id for m in messages))  # locked now, as one
            self._send_lock(kept)
            self._wait_idle(kept)
        owned = [m for m in messages if m.send_id in kept.locked]
        written = _Written(
            owned=frozenset(m.ref for m in owned),
            campaign_stopped=self.campaign_stopped and len(owned) < len(messages),
        )
        if not kept.locks_taken:
            assert not owned
            return written
        driver = kept.driver
        rows = [self._row(m, now) for m in owned]
        statement = b"COMMIT; BEGIN"
        if owned:
            statement = self._update_for(driver, owned, now) + b"; " + statement
        try:
            with _THREAD_SWITCHES.held(), self.quiet.critical():
                self._commit_with_dots(kept, driver, statement, rows, written, dots)
        except BaseException:
            self._discard(kept)  # reset: its transaction (and a COMMIT still held) dies with it
            raise
        # the COMMIT let its locks go: the rows of messages still under way are locked again, on the
        # connection that forms the next group
        group = {m.send_id for m in messages}
        self._wanted.update(dict.fromkeys(send_id for send_id in kept.locked if send_id not in group))
        kept.locked.clear()
        kept.locks_taken = False
        self._not_ours -= group
        self._forming = (self._forming + 1) % len(self._kept)
        return written

    def _update_for(self, driver: Any, owned: list[OutgoingMessage], now: Any) -> bytes:
        """The UPDATE that marks the group's locked rows sent, as a statement with its values (it is sent
        with ``COMMIT; BEGIN`` in one query string, which takes no parameters)."""
        literal = Transformer(driver).as_literal
        ids = literal([m.send_id for m in owned]).decode()
        refs = literal([m.ref for m in owned]).decode()
        events = literal([m.consent_event_id for m in owned]).decode()
        moment = literal(now).decode()
        return (
            f"UPDATE {self.table} AS s SET status = '{SendStatus.SENT.value}', ref = v.ref, "
            f"consent_event_id = v.event_id, sent_at = {moment}, decided_at = {moment}, "
            f"claimed_by = NULL, claimed_until = NULL "
            f"FROM unnest({ids}::bigint[], {refs}::text[], {events}::bigint[]) AS v(id, ref, event_id) "
            f"WHERE s.id = v.id AND s.workspace_id = {self.workspace_id:d}"
        ).encode()

    # -- PostgreSQL: the rows of messages under way locked ahead of their group -------------------------

    def want_lock(self, send_id: int) -> None:
        """Lock this send's row as soon as the connection forming the next group is free (:meth:`pump`)."""
        if send_id not in self._kept[self._forming].locked and send_id not in self._not_ours:
            self._wanted[send_id] = None

    def forget(self, send_id: int) -> None:
        """The send's message will not be committed by a group (it failed, or it went): no lock any more.
        (A row locked stays so until the next COMMIT; the update of a failed one is written after it.)"""
        self._wanted.pop(send_id, None)
        self._not_ours.discard(send_id)
        for kept in self._kept:
            kept.locked.discard(send_id)
            if kept.locking is not None and send_id in kept.locking:
                kept.locking.remove(send_id)

    def lock_state(self, send_id: int) -> bool | None:
        """True: the send's row is locked, ours; False: it is not ours; None: not known yet."""
        if send_id in self._kept[self._forming].locked:
            return True
        return False if send_id in self._not_ours else None

    def pump(self) -> list[int]:
        """Move the kept connections on without waiting: read the answers that arrived (COMMITs', a lock's),
        send the lock of the rows wanted since. The sockets to watch while answers are awaited."""
        awaited = self._settle_arrived()
        kept = self._kept[self._forming]
        if kept.locking is not None:
            pgconn = kept.driver.pgconn
            try:
                arrived = _answered(pgconn)
            except BaseException:
                self._discard(kept)
                raise
            if not arrived:
                return [*awaited, int(pgconn.socket)]
            self._land_lock(kept)
        if self._wanted and kept.owed is None:
            self._send_lock(kept)
            awaited.append(int(kept.driver.pgconn.socket))
        return awaited

    def _settle_arrived(self) -> list[int]:
        """Read the COMMITs' answers that have arrived; the sockets of those still awaited."""
        awaited: list[int] = []
        for kept in self._kept:
            if kept.owed is None:
                continue
            pgconn = kept.owed.pgconn
            try:
                arrived = _answered(pgconn)
            except (psycopg.Error, OSError):
                arrived = True  # _settle() reads the failure
            if arrived:
                self._settle(kept)
            else:
                awaited.append(int(pgconn.socket))
        return awaited

    def _wait_idle(self, kept: _Kept) -> None:
        """Read every answer the connection owes, waiting for them (and reading the other connections'
        meanwhile: a lock may wait for a row that another one's failed transaction holds until then)."""
        self._settle(kept)
        if kept.locking is not None:
            pgconn = kept.driver.pgconn
            try:
                while not _answered(pgconn):
                    wait_for_io([pgconn.socket, *self._settle_arrived()], [], [])
            except BaseException:
                self._discard(kept)
                raise
            self._land_lock(kept)

    def _send_lock(self, kept: _Kept) -> None:
        """Send the lock of the rows wanted (without waiting for its answer, :meth:`_land_lock`)."""
        driver = self._kept_driver(kept)
        pgconn = driver.pgconn
        ids = list(self._wanted)
        self._wanted.clear()
        try:
            with driver.lock:
                if kept.lock_prepared_on is not pgconn:
                    self._prepare_lock(pgconn)
                    kept.lock_prepared_on = pgconn
                values = (ids, self.workspace_id, self.worker)
                # as text: the server reads each as the type the statement gave it
                parameters = Transformer(driver).dump_sequence(values, [PyFormat.TEXT] * len(values))
                pgconn.send_query_prepared(self.lock_statement, parameters)
                _flush(pgconn)
        except BaseException:
            self._wanted.update(dict.fromkeys(ids))
            self._discard(kept)
            raise
        kept.locking = ids
        kept.locks_taken = True

    def _prepare_lock(self, pgconn: Any) -> None:
        """Prepare the lock statement on the kept connection (in a savepoint of its transaction: a connection
        from the pool may have it already, from an earlier run of the campaign)."""
        pq = psycopg.pq
        result = pgconn.exec_(b"SAVEPOINT zgoda_prepare")
        if result.status == pq.ExecStatus.COMMAND_OK:
            result = pgconn.prepare(self.lock_statement, self.lock_sql)
            if result.error_field(pq.DiagnosticField.SQLSTATE) == b"42P05":  # duplicate_prepared_statement
                result = pgconn.exec_(b"ROLLBACK TO SAVEPOINT zgoda_prepare")
        if result.status == pq.ExecStatus.COMMAND_OK:
            result = pgconn.exec_(b"RELEASE SAVEPOINT zgoda_prepare")
        if result.status != pq.ExecStatus.COMMAND_OK:
            raise psycopg.errors.error_from_result(result, encoding="utf-8")

    def _land_lock(self, kept: _Kept) -> None:
        """The lock's answer (arrived): which rows are ours; when not all, whether the campaign stopped."""
        ids, kept.locking = kept.locking, None
        assert ids is not None
        driver = kept.driver
        pgconn = driver.pgconn
        ours: set[int] = set()
        failure: Any = None
        while (result := pgconn.get_result()) is not None:
            if result.status == psycopg.pq.ExecStatus.TUPLES_OK:
                ours.update(int(result.get_value(row, 0)) for row in range(result.ntuples))
            elif failure is None:
                failure = result
        if failure is not None:
            self._wanted.update(dict.fromkeys(ids))
            self._discard(kept)
            raise psycopg.errors.error_from_result(failure, encoding="utf-8")
        for send_id in ids:
            (kept.locked if send_id in ours else self._not_ours).add(send_id)
        if any(send_id not in ours for send_id in ids):  # taken over by another worker, or the campaign stopped
            with driver.cursor() as cursor:
                cursor.execute(self.status_sql, (self.campaign_id,))
                (status,) = cursor.fetchone()
            self.campaign_stopped = status != CampaignStatus.SENDING.value

    def _kept_driver(self, kept: _Kept) -> Any:
        """The kept connection's driver, in a transaction that has done nothing yet (a new connection
        begins one here, and waits for it; afterwards each COMMIT begins the next). A connection that
        has anything to say between groups has been ended by the server (a restart,
        ``idle_in_transaction_session_timeout``, ``pg_terminate_backend``): it is replaced."""
        if kept.connection is not None and not self._alive(kept):
            self._discard(kept)
        if kept.connection is None or kept.connection.closed or kept.connection.invalidated:
            kept.connection = self.database.engine.connect()
            self.connections_made += 1
            driver: Any = kept.driver
            with driver.lock:
                driver.pgconn.send_query(b"BEGIN")
                _flush(driver.pgconn)
            kept.owed = _Owed(driver.pgconn, rows=None)
            self._settle(kept)
            if kept.connection is None:
                raise psycopg.OperationalError("a new database connection could not begin a transaction")
        return kept.driver

    @staticmethod
    def _alive(kept: _Kept) -> bool:
        """Whether a kept connection (owing no answer) is still in its transaction: one that has anything to
        say has been ended by the server."""
        connection = kept.connection
        if connection is None or connection.invalidated or connection.closed:
            return False
        pgconn = kept.driver.pgconn
        pq = psycopg.pq
        try:
            _read_what_arrived(pgconn)
            return bool(pgconn.status == pq.ConnStatus.OK and pgconn.transaction_status == pq.TransactionStatus.INTRANS)
        except (psycopg.Error, OSError):
            return False

    def settle(self) -> None:
        """PostgreSQL: read the answers every kept connection owes (see :meth:`_settle`)."""
        for kept in self._kept:
            self._settle(kept)

    def _settle(self, kept: _Kept) -> None:
        """PostgreSQL: read the answers a group left unread on its connection (its COMMIT, and the BEGIN after).

        A COMMIT that failed leaves rows whose dots went out: they are marked sent again on a new
        connection (as they are when the COMMIT's answer is read at once). A connection that did not
        answer is replaced (one the server ended after answering is found by :meth:`_kept_driver`).
        Called when they arrive (:meth:`pump`), before the connection's next lock or group, and when the
        run closes; verdicts do not wait for them (a message whose dot went out counts as sent).
        """
        owed, kept.owed = kept.owed, None
        if owed is None:
            return
        pgconn, pq = owed.pgconn, psycopg.pq
        statuses: list[Any] = []
        commands: list[bytes | None] = []
        failure: str | None = None
        try:
            while True:
                pgconn.consume_input()
                if not pgconn.is_busy():
                    break
                wait_for_io([pgconn.socket], [], [])
            while (result := pgconn.get_result()) is not None:
                statuses.append(result.status)
                commands.append(result.command_status)
                if result.status != pq.ExecStatus.COMMAND_OK and failure is None:
                    failure = result.get_error_message() or str(result.status)
        except (psycopg.Error, OSError) as error:
            failure = failure or str(error)
        expected = owed.expected
        healthy = (
            statuses == [pq.ExecStatus.COMMAND_OK] * len(expected)
            and commands == expected
            and pgconn.status == pq.ConnStatus.OK
            and pgconn.transaction_status == pq.TransactionStatus.INTRANS
        )
        if not healthy:
            self._discard(kept)
        # up to the COMMIT as expected (a COMMIT of a transaction that had failed answers "ROLLBACK"; an UPDATE
        # that marked fewer rows than it was given, its count): the rows are sent
        committed = commands[: len(expected) - 1] == expected[:-1] and all(
            status == pq.ExecStatus.COMMAND_OK for status in statuses[: len(expected) - 1]
        )
        if owed.rows and not committed:
            log.error("COMMIT failed after the final dots were written (%s): marking the rows sent again", failure)
            try:
                with self.database.engine.begin() as again:
                    again.exec_driver_sql(self.remark_sql, owed.rows)
            except Exception:
                send_ids = [row[5] for row in owed.rows]  # row[5]: the send's id (see _row)
                log.critical("sends %s were delivered but could not be marked sent: they may be sent again", send_ids)
                raise

    def _discard(self, kept: _Kept) -> None:
        """Give up a kept connection (its transaction, if any, ends with it, and so do its locks: the rows of
        messages still under way are locked again on the next) and its socket handle."""
        kept.owed = None
        self._wanted.update(dict.fromkeys(kept.locked))
        if kept.locking is not None:
            self._wanted.update(dict.fromkeys(kept.locking))
        kept.locked.clear()
        kept.locking = None
        kept.locks_taken = False
        kept.lock_prepared_on = None
        kept.close_socket()
        if kept.connection is not None:
            kept.connection.invalidate()
            kept.connection = None

    def _mark_group(self, driver: Any, messages: list[OutgoingMessage], now: Any) -> _Written:
        """PostgreSQL: one UPDATE for the group, which returns the refs of the rows it marked (on the driver's
        connection ``driver``, in the transaction under way)."""
        parameters = (
            now,
            now,
            [m.send_id for m in messages],
            [m.ref for m in messages],
            [m.consent_event_id for m in messages],
            self.workspace_id,
            self.worker,
        )
        with driver.cursor() as cursor:
            cursor.execute(self.group_sql, parameters, prepare=True)
            marked = frozenset(ref for (ref,) in cursor.fetchall())
        stopped = False
        if len(marked) < len(messages):  # taken over by another worker, or the campaign stopped
            with driver.cursor() as cursor:
                cursor.execute(self.status_sql, (self.campaign_id,))
                (status,) = cursor.fetchone()
            stopped = status != CampaignStatus.SENDING.value
        return _Written(owned=marked, campaign_stopped=stopped)

    def _mark_rows(
        self, connection: Connection, messages: list[OutgoingMessage], rows: list[tuple[Any, ...]]
    ) -> _Written:
        """Other databases: one UPDATE per row; when not every row matched, ours carry our refs."""
        matched = connection.exec_driver_sql(self.sql, rows).rowcount
        if matched == len(rows) and connection.dialect.supports_sane_multi_rowcount:
            return _Written(owned=frozenset(m.ref for m in messages), campaign_stopped=False)
        # Taken over by another worker, or the campaign stopped (even between two of the rows). Ours are
        # exactly the rows that now carry our refs (refs are random).
        owned: set[str] = set()
        for message in messages:
            owned.update(connection.exec_driver_sql(self.owned_sql, (message.ref,)).scalars())
        status = connection.exec_driver_sql(self.status_sql, (self.campaign_id,)).scalar()
        return _Written(owned=frozenset(owned), campaign_stopped=status != CampaignStatus.SENDING.value)

    @staticmethod
    def _dots_then_commit(transaction: Transaction, written: _Written, dots: _Dots, *, own_connection: Any) -> None:
        """SQLite (the commit happens in this process): dots held, the commit, then the dots kept and let go.

        The dots are written held in the kernel on sockets that drop them if the process dies
        (core/tcp_hold.py); the COMMIT is durable once SQLite has written its last log frame; from
        then on one ``keep_if_killed`` per socket makes the dots go out whatever happens. A process
        killed before the commit delivers nothing; what stays in doubt is SQLite's few steps after that
        frame and those calls. On the run's own connection the COMMIT keeps the interpreter lock
        (core/sqlite_commit.py), so no other thread can run in between (measured with
        benchmarks/kill_senders.py: committing first and writing the dots after skipped 3 messages in
        60 kills, dots held and kept before a usual commit duplicated 2 to 4). A commit that fails
        drops the held dots (the connections are reset) and nothing is delivered.
        """
        holding_gil = own_connection is not None and sqlite_commit.ready(own_connection)  # checked outside
        try:
            dots.write(written.owned, held=True, drop_if_killed=True)
            if not (holding_gil and sqlite_commit.commit_holding_gil(own_connection)):
                transaction.commit()
        except BaseException:
            dots.abandon()
            raise
        dots.keep_if_killed()  # the commit is durable: the dots now go out whatever happens
        dots.release()

    def _commit_with_dots(
        self, kept: _Kept, driver: Any, statement: bytes, rows: list[tuple[Any, ...]], written: _Written, dots: _Dots
    ) -> None:
        """PostgreSQL: the COMMIT and the final dots leave this process as one, whenever it is killed.

        Both are written held in the kernel (core/tcp_hold.py): first the COMMIT, on a socket that drops
        it if the process dies now, then the dots, which a dying process's close would still send.
        One system call, ``keep_if_killed``, then makes the COMMIT go out with them either way: a
        process killed before it delivers nothing and commits nothing, one killed after it both. Only
        then do they go out. (Without holding, the COMMIT woke the server, which could take the CPU
        before the dots were written: a process killed then left rows sent without their dots, in
        about one kill in 40.) The COMMIT goes as ``UPDATE …; COMMIT; BEGIN`` (``statement``), whose
        BEGIN opens the connection's next transaction, and its answers are read later (:meth:`settle`):
        meanwhile the connections whose
        dots went out take their next messages. Should the COMMIT fail after all (the server went
        away), the messages have gone: :meth:`settle` marks their rows sent again on a new connection.
        """
        pgconn = driver.pgconn
        with driver.lock:
            pg_socket = kept.socket_for(pgconn)
            holding = pg_socket is not None and tcp_hold.hold(pg_socket, drop_if_killed=True)
            written_out = False
            try:
                if holding:
                    dots.hold(written.owned)  # before the COMMIT, so that only the dots' sends follow it
                if pg_socket is not None and holding:  # TCP_CORK lets full segments go: the end must stay held
                    statement += b" " * tcp_hold.padding_to_stay_held(pg_socket, _QUERY_FRAMING + len(statement))
                pgconn.send_query(statement)
                _flush(pgconn)  # psycopg's connections do not block: libpq may still have some of it
                dots.write(written.owned, held=holding)
                written_out = True
            finally:
                if written_out:
                    if pg_socket is not None and holding:
                        tcp_hold.keep_if_killed(pg_socket)  # the moment both are sent
                        tcp_hold.release(pg_socket)
                    dots.release()
                else:  # nothing may go out: the held dots are dropped with their connections, the held
                    dots.abandon()  # COMMIT with the database connection (reset), which the caller discards
                    dots.release()  # connections held for a dot never written
        kept.owed = _Owed(pgconn, rows=rows)

    def _sqlite_pragma(self, pragma: str) -> None:
        """On the kept connection's driver itself: through SQLAlchemy it would begin a transaction."""
        assert self._connection is not None
        driver: Any = self._connection.connection.dbapi_connection
        driver.execute(f"PRAGMA {pragma}")

    def close(self) -> None:
        for kept in self._kept:
            if kept.locking is not None:  # a lock unanswered: the connection is not fit for the pool
                self._discard(kept)
        try:
            self.settle()  # the last COMMITs confirmed (or their rows marked again); the transactions are empty
        finally:
            for kept in self._kept:
                kept.close_socket()
                if kept.connection is not None:
                    kept.connection.close()
                    kept.connection = None
            if self._connection is not None:
                if not self.sends_commit_first and not self._connection.invalidated:
                    with contextlib.suppress(Exception):  # back to the pool as every other connection is
                        self._sqlite_pragma(f"wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}")
                self._connection.close()
                self._connection = None


def _give_back(database: Database, send_ids: list[int], worker: str, workspace_id: int) -> None:
    """Claimed sends this run never sent (it stopped): pending again, the claim's attempt not counted.

    In a campaign cancelled meanwhile they become ``cancelled``, like every pending send at the cancel.
    """
    with database.transaction() as session:
        bind_scope(session, workspace_id=workspace_id, actor=Actor.system("sending"))
        campaign_status = session.scalar(
            select(Campaign.status).join(Send, Send.campaign_id == Campaign.id).where(Send.id == send_ids[0])
        )
        values: dict[str, Any] = {"status": SendStatus.PENDING, "attempts": Send.attempts - 1}
        if campaign_status == CampaignStatus.CANCELLED:
            values = {"status": SendStatus.CANCELLED, "decided_at": utcnow()}
        session.execute(
            update(Send)
            .where(Send.id.in_(send_ids), Send.claimed_by == worker, Send.status == SendStatus.SENDING)
            .values(**values, claimed_by=None, claimed_until=None),
            execution_options={"synchronize_session": False},
        )


def _after_refusal(reply: SmtpOutcome, outcome: RunOutcome) -> dict[str, Any]:
    """The row's values after the server refused MAIL, RCPT or DATA (call with the outcome's lock held)."""
    text = f"{reply.code} {reply.text}"[:500]
    if reply.permanent:
        outcome.failed += 1
        reason = f"smtp_{reply.enhanced_status or reply.code}"
        outcome.count_reason(reason)
        return {"status": SendStatus.FAILED, "reason": reason, "smtp_reply": text, "claimed_by": None}
    outcome.retried += 1
    return {"status": SendStatus.PENDING, "smtp_reply": text, "claimed_by": None, "claimed_until": None}


class _Pacer:
    """Keeps one run under a rate (messages per second), if a rate is set; the sending thread's."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.started = time.monotonic()
        self.count = 0

    def delay(self) -> float:
        """Seconds until the next message may start (0: now)."""
        if not self.rate:
            return 0.0
        return max(0.0, self.started + (self.count + 1) / self.rate - time.monotonic())

    def take(self) -> None:
        """A message starts."""
        self.count += 1
