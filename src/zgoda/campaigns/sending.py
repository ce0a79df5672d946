"""Sending a campaign: the audience frozen into send rows, the gate asked per message, SMTP in rounds.

Never twice, never skipped (docs/sending.md):

1. ``prepare`` inserts one ``pending`` row per member of the audience; (campaign, contact) is unique.
2. A worker *claims* a batch: rows become ``sending`` with its name and a lease.
3. The gate decides each claimed row now (consent, suppression, restriction, list, workspace);
   refused rows are recorded with their reason and never sent.
4. For each round of K messages (one per SMTP connection) the worker writes every message up to
   its final dot, commits the rows as ``sent`` (only those it still owns), then writes the dots.
   A server discards a DATA that never got its final dot, so a worker killed before that commit
   delivered nothing, and its rows are claimed again once the lease runs out; a worker killed
   after the commit leaves rows that are never sent again. The one moment left in doubt is
   between the commit and the dot, a few microseconds of one process: the message is then
   recorded as sent but may not have left.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, String, and_, bindparam, exists, func, insert, literal, or_, select, text, update
from sqlalchemy.orm import Session

from zgoda.accounts.models import Workspace
from zgoda.audiences.eligibility import Audience, Exclusion, audience_for, decision_query
from zgoda.audiences.filters import check_definition, compile_definition
from zgoda.audiences.models import ListMember
from zgoda.audit import service as audit
from zgoda.campaigns import links
from zgoda.campaigns.domains import signer_for
from zgoda.campaigns.footer import FooterContext
from zgoda.campaigns.message import compose_message
from zgoda.campaigns.models import Campaign, CampaignStatus, Send, SendStatus
from zgoda.campaigns.rendering import CompiledTemplate, RenderedParts, compile_template
from zgoda.campaigns.service import contact_merge_values, merge_fields, sender_identity
from zgoda.campaigns.tracking import add_tracking, tracking_consents
from zgoda.consent.models import Purpose, Source
from zgoda.contacts.models import Contact
from zgoda.core.clock import utcnow
from zgoda.core.db import Database
from zgoda.core.settings import Settings
from zgoda.core.tenancy import Actor, bind_scope, unscoped
from zgoda.delivery.dkim import DkimSigner
from zgoda.delivery.transport import (
    Prepared,
    SmtpConnection,
    SmtpConnectionError,
    SmtpOutcome,
    SmtpOutcomeUnknown,
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


def build_message(
    ctx: CampaignContext,
    *,
    send_id: int,
    contact: Contact,
    source_id: int | None,
    consent_event_id: int | None,
    tracked: bool = False,
) -> OutgoingMessage:
    """Render, add the footer and the headers, and sign one message."""
    assert contact.email is not None
    ref = links.new_send_ref()
    token = links.make_token(
        ctx.secret,
        links.LinkToken(
            workspace_id=ctx.workspace_id, contact_id=contact.id, purpose_id=ctx.purpose_id, send_id=send_id
        ),
    )
    unsubscribe = links.unsubscribe_url(ctx.base_url, token)
    footer = FooterContext(
        sender_name=ctx.sender_name,
        postal_address=ctx.postal_address,
        purpose_label=ctx.purpose_label,
        source_label=ctx.source_names.get(source_id) if source_id is not None else None,
        unsubscribe_url=unsubscribe,
        preferences_url=links.preferences_url(ctx.base_url, token),
        language=ctx.language,
    )
    parts = ctx.compiled.render(
        contact=contact_merge_values(contact),
        workspace_name=ctx.workspace_name,
        campaign_name=ctx.campaign_name,
        footer=footer,
    )
    if tracked:  # only under a granted profiling consent (see campaigns/tracking.py)
        parts = RenderedParts(
            subject=parts.subject,
            html=add_tracking(parts.html, base_url=ctx.base_url, secret=ctx.secret, token=token),
            text=parts.text,
            footer_attached=parts.footer_attached,
        )
    data = compose_message(
        parts=parts,
        from_address=ctx.from_email,
        from_name=ctx.from_name,
        to_address=contact.email,
        reply_to=ctx.reply_to,
        message_id=links.message_id(ref, ctx.from_domain),
        return_path=links.bounce_address(ref, ctx.bounce_domain),
        list_unsubscribe_https=unsubscribe,
        list_unsubscribe_mailto=links.unsubscribe_mailto(ref, ctx.bounce_domain) if ctx.unsubscribe_mailto else None,
        list_id=f"{ctx.campaign_name} <campaign-{ctx.campaign_id}.{ctx.workspace_slug}.{ctx.from_domain}>",
        feedback_id=f"{ctx.campaign_id}:{ctx.workspace_slug}:zgoda",
        ref=ref,
        extra_headers=provider_ref_headers(ctx.provider, ref),
    )
    if ctx.signer is not None:
        data = ctx.signer.sign(data)
    return OutgoingMessage(
        send_id=send_id,
        contact_id=contact.id,
        ref=ref,
        rcpt_to=contact.email,
        mail_from=links.bounce_address(ref, ctx.bounce_domain),
        data=data,
        consent_event_id=consent_event_id,
    )


# --- claiming and deciding ----------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    send_id: int
    contact_id: int
    attempts: int


def claim(session: Session, campaign_id: int, *, worker: str, size: int, lease: float) -> list[Claimed]:
    """Take up to ``size`` sends that nobody holds (pending, or held by a worker whose lease ran out)."""
    now = utcnow()
    free = or_(
        Send.status == SendStatus.PENDING,
        and_(Send.status == SendStatus.SENDING, Send.claimed_until < now),
    )
    candidates = (
        select(Send.id)
        .where(Send.campaign_id == campaign_id, free)
        .order_by(Send.id)
        .limit(size)
        .with_for_update(skip_locked=True)
    )
    ids = list(session.scalars(candidates))
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


@dataclass
class _Slot:
    connection: SmtpConnection
    message: OutgoingMessage | None = None
    prepared: bool = False
    outcome: SmtpOutcome | None = None
    error: BaseException | None = None


def run(
    database: Database,
    campaign_id: int,
    settings: Settings,
    *,
    worker: str | None = None,
    connections: int | None = None,
    smtp: SmtpSettings | None = None,
    on_round: Callable[[int], None] | None = None,
) -> RunOutcome:
    """Send a campaign's sends until none is left for this worker (or the campaign stops)."""
    worker = worker or worker_name()
    size = connections or settings.smtp_connections
    outcome = RunOutcome()
    slots = [_Slot(SmtpConnection(smtp or smtp_settings_from(settings))) for _ in range(size)]
    pacing = _Pacer()
    ctx: CampaignContext | None = None
    with ThreadPoolExecutor(max_workers=size, thread_name_prefix="zgoda-smtp") as pool:
        try:
            while True:
                batch = _next_batch(database, campaign_id, settings, worker, ctx, outcome)
                if isinstance(batch, str):
                    outcome.stopped = batch
                    return outcome
                if isinstance(batch, float):
                    time.sleep(batch)
                    continue
                ctx, messages = batch
                parts = max(1, settings.send_parallel_tasks)
                pacing.rate = ctx.rate_per_second / parts if ctx.rate_per_second else None
                for start in range(0, len(messages), size):
                    round_messages = messages[start : start + size]
                    _send_round(database, pool, slots, round_messages, worker, outcome, ctx.workspace_id)
                    pacing.after(len(round_messages))
                    if on_round is not None:
                        on_round(outcome.sent)
        finally:
            for slot in slots:
                slot.connection.close()


def _next_batch(
    database: Database,
    campaign_id: int,
    settings: Settings,
    worker: str,
    ctx: CampaignContext | None,
    outcome: RunOutcome,
) -> str | float | tuple[CampaignContext, list[OutgoingMessage]]:
    """Claim and decide the next batch: its messages, or seconds to wait, or why the run ends."""
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
            wait = _finish_or_wait(session, campaign)
            return "done" if wait is None else wait
        if ctx is None:
            ctx = campaign_context(session, campaign, settings)
        audience = audience_for(
            session, purpose_id=campaign.purpose_id, list_id=campaign.list_id, segment_id=campaign.segment_id
        )
        return ctx, _decide_and_build(session, ctx, audience, claimed, worker, outcome)


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


def _decide_and_build(
    session: Session,
    ctx: CampaignContext,
    audience: Audience,
    claimed: list[Claimed],
    worker: str,
    outcome: RunOutcome,
) -> list[OutgoingMessage]:
    """Ask the gate about every claimed send; record refusals; build the messages of the rest."""
    decisions = decide(session, audience, [c.contact_id for c in claimed])
    tracked = tracking_consents(session, [c.contact_id for c in claimed])
    contacts = {
        contact.id: contact
        for contact in session.scalars(select(Contact).where(Contact.id.in_([c.contact_id for c in claimed])))
    }
    now = utcnow()
    refusals: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    messages: list[OutgoingMessage] = []
    for item in claimed:
        decision = decisions[item.contact_id]
        contact = contacts.get(item.contact_id)
        reason = decision.reason
        if reason is None and (contact is None or not contact.email):
            reason = Exclusion.NO_ADDRESS.value
        if item.attempts > MAX_ATTEMPTS:
            failures.append({"b_id": item.send_id, "b_reason": TOO_MANY_ATTEMPTS})
            outcome.failed += 1
            outcome.by_reason[TOO_MANY_ATTEMPTS] = outcome.by_reason.get(TOO_MANY_ATTEMPTS, 0) + 1
            continue
        if reason is not None:
            refusals.append({"b_id": item.send_id, "b_reason": str(reason)})
            outcome.refused += 1
            outcome.by_reason[str(reason)] = outcome.by_reason.get(str(reason), 0) + 1
            continue
        assert contact is not None
        messages.append(
            build_message(
                ctx,
                send_id=item.send_id,
                contact=contact,
                source_id=decision.source_id,
                consent_event_id=decision.consent_event_id,
                tracked=item.contact_id in tracked,
            )
        )
    table = Send.__table__
    for rows, status in ((refusals, SendStatus.REFUSED), (failures, SendStatus.FAILED)):
        if rows:
            session.connection().execute(
                update(table)  # type: ignore[arg-type]
                .where(table.c.id == bindparam("b_id"), table.c.claimed_by == worker)
                .values(status=status.value, reason=bindparam("b_reason"), decided_at=now, claimed_by=None),
                rows,
            )
    return messages


def _send_round(
    database: Database,
    pool: ThreadPoolExecutor,
    slots: list[_Slot],
    messages: list[OutgoingMessage],
    worker: str,
    outcome: RunOutcome,
    workspace_id: int,
) -> None:
    """Write K messages up to their final dot, commit them as sent, then write the dots."""
    active = slots[: len(messages)]
    for slot, message in zip(active, messages, strict=True):
        slot.message, slot.prepared, slot.outcome, slot.error = message, False, None, None
    list(pool.map(_prepare_slot, active))
    prepared = [slot for slot in active if slot.prepared]
    now = utcnow()
    owned: set[int] = set()
    with database.transaction() as session:
        bind_scope(session, workspace_id=workspace_id, actor=Actor.system("sending"))
        if prepared:
            owned = _mark_sent(session, [slot.message for slot in prepared if slot.message is not None], worker, now)
        _record_refused_at_prepare(session, active, worker, outcome, now)
    # the sent rows are committed: now, and only now, the final dots
    for slot in prepared:
        if slot.message is None or slot.message.send_id not in owned:
            slot.connection.abandon()
            slot.prepared = False
    to_complete = [slot for slot in prepared if slot.prepared]
    list(pool.map(_complete_slot, to_complete))
    outcome.sent += len(to_complete)
    _record_final_replies(database, to_complete, outcome)


def _mark_sent(session: Session, messages: list[OutgoingMessage], worker: str, now: datetime) -> set[int]:
    """Mark sent the messages whose rows this worker still holds; their send ids.

    One UPDATE per row, on the condition that the row is still this worker's: a row another worker
    took over (after this one's lease ran out) matches nothing and stays theirs. When every row
    matched, which the driver's summed row count says, that is all; otherwise the rows that now carry
    this round's refs are the ones this worker owns. (One statement per round where a SELECT ... FOR
    UPDATE and an UPDATE used to be: the round's transaction is the part of sending that no
    connection overlaps.)
    """
    table = Send.__table__
    connection = session.connection()
    result = connection.execute(
        update(table)  # type: ignore[arg-type]
        .where(
            table.c.id == bindparam("b_id"),
            table.c.claimed_by == worker,
            table.c.status == SendStatus.SENDING.value,
        )
        .values(
            status=SendStatus.SENT.value,
            ref=bindparam("b_ref"),
            consent_event_id=bindparam("b_event"),
            sent_at=now,
            decided_at=now,
            claimed_by=None,
            claimed_until=None,
        ),
        [{"b_id": m.send_id, "b_ref": m.ref, "b_event": m.consent_event_id} for m in messages],
    )
    ids = {message.send_id for message in messages}
    if connection.dialect.supports_sane_multi_rowcount and result.rowcount == len(messages):
        return ids
    refs = [message.ref for message in messages]
    return set(connection.scalars(select(table.c.id).where(table.c.id.in_(ids), table.c.ref.in_(refs))))


def _prepare_slot(slot: _Slot) -> None:
    message = slot.message
    assert message is not None
    try:
        result = slot.connection.prepare(message.mail_from, message.rcpt_to, message.data)
    except SmtpConnectionError as error:
        slot.error = error
        return
    if isinstance(result, Prepared):
        slot.prepared = True
    else:
        slot.outcome = result


def _complete_slot(slot: _Slot) -> None:
    try:
        slot.outcome = slot.connection.complete()
    except SmtpOutcomeUnknown as error:
        slot.error = error  # recorded as sent: it may have been delivered, so it is never sent again
    except SmtpConnectionError as error:
        slot.error = error


def _record_refused_at_prepare(
    session: Session, slots: list[_Slot], worker: str, outcome: RunOutcome, now: datetime
) -> None:
    """Sends the server refused before the dot (or that never reached it): failed, or back in the queue."""
    errors = 0
    for slot in slots:
        message = slot.message
        if message is None or slot.prepared:
            continue
        values: dict[str, Any]
        if slot.error is not None:
            errors += 1
            values = {"status": SendStatus.PENDING, "claimed_by": None, "claimed_until": None}
            values["smtp_reply"] = str(slot.error)[:500]
            outcome.retried += 1
        else:
            assert slot.outcome is not None
            values = _after_refusal(slot.outcome, outcome)
        session.execute(
            update(Send).where(Send.id == message.send_id, Send.claimed_by == worker).values(**values, decided_at=now),
            execution_options={"synchronize_session": False},
        )
    if errors and errors == len([s for s in slots if s.message is not None]):
        raise SmtpUnavailable(str(next(s.error for s in slots if s.error is not None)))


class SmtpUnavailable(Exception):
    """Every connection of a round failed: the server is down or refuses us; try again later."""


def _after_refusal(reply: SmtpOutcome, outcome: RunOutcome) -> dict[str, Any]:
    text = f"{reply.code} {reply.text}"[:500]
    if reply.permanent:
        outcome.failed += 1
        reason = f"smtp_{reply.enhanced_status or reply.code}"
        outcome.by_reason[reason] = outcome.by_reason.get(reason, 0) + 1
        return {"status": SendStatus.FAILED, "reason": reason, "smtp_reply": text, "claimed_by": None}
    outcome.retried += 1
    return {"status": SendStatus.PENDING, "smtp_reply": text, "claimed_by": None, "claimed_until": None}


def _record_final_replies(database: Database, slots: list[_Slot], outcome: RunOutcome) -> None:
    """A server that refused the message at its final dot: the row says so (it was not delivered)."""
    refused = [slot for slot in slots if slot.outcome is not None and not slot.outcome.accepted]
    if not refused:
        return
    with database.transaction() as session, unscoped(session):
        for slot in refused:
            assert slot.outcome is not None
            assert slot.message is not None
            reply = slot.outcome
            outcome.sent -= 1
            status = SendStatus.FAILED if reply.permanent else SendStatus.PENDING
            values: dict[str, Any] = {"status": status, "smtp_reply": f"{reply.code} {reply.text}"[:500]}
            if reply.permanent:
                values["reason"] = f"smtp_{reply.enhanced_status or reply.code}"
                outcome.failed += 1
            else:
                values["ref"] = None  # a new message with a new ref next time
                outcome.retried += 1
            session.execute(
                update(Send).where(Send.id == slot.message.send_id).values(**values),
                execution_options={"synchronize_session": False},
            )


class _Pacer:
    """Keeps one run under a rate (messages per second), if a rate is set."""

    def __init__(self) -> None:
        self.rate: float | None = None
        self.started = time.monotonic()
        self.count = 0

    def after(self, sent: int) -> None:
        self.count += sent
        if not self.rate:
            return
        due = self.started + self.count / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
