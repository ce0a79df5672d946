"""Suppression lists: addresses a workspace (or the whole platform) must not mail.

An entry is the keyed hash of the normalised address (:func:`zgoda.core.keys.address_hasher`), so an
erased subject stays suppressed without the address being kept. ``hint`` (``j***@example.com``) helps
operators recognise an entry; it is blanked when the subject is erased.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zgoda.audit import service as audit
from zgoda.consent.models import ConsentEvent, EventType, Purpose
from zgoda.contacts.models import Contact
from zgoda.contacts.service import normalise_email
from zgoda.core.errors import Conflict, InvalidInput, NotFound
from zgoda.core.keys import address_hasher
from zgoda.core.tenancy import current_actor, get_scoped
from zgoda.feedback.models import PlatformSuppression, Suppression

REASONS = ("hard_bounce", "soft_bounces", "complaint", "unsubscribe", "operator", "erasure")


def address_hint(address: str) -> str:
    """``j***@example.com``: enough to recognise an address, not enough to mail it."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def suppress(
    session: Session, *, address: str, reason: str, detail: str = "", hint: bool = True
) -> tuple[Suppression, bool]:
    """Put ``address`` on the workspace's list (kept as it is if already there); the entry and whether it is new."""
    if reason not in REASONS:
        raise InvalidInput(f"A suppression reason is one of {', '.join(REASONS)}.", field="reason")
    address = normalise_email(address, field_name="address")
    address_hash = address_hasher(session)(address)
    existing = session.scalar(select(Suppression).where(Suppression.address_hash == address_hash))
    if existing is not None:
        return existing, False
    entry = Suppression(
        address_hash=address_hash,
        reason=reason,
        detail=detail[:1000],
        hint=address_hint(address) if hint else None,
        created_by=current_actor(session).label,
    )
    session.add(entry)
    session.flush()
    audit.record(
        session,
        action="suppression.add",
        object_type="suppression",
        object_id=entry.id,
        summary={"reason": reason, "detail": detail[:200]},
    )
    return entry, True


def is_suppressed(session: Session, address: str) -> Suppression | None:
    """The workspace's entry for ``address``, if any."""
    address_hash = address_hasher(session)(normalise_email(address, field_name="address"))
    return session.scalar(select(Suppression).where(Suppression.address_hash == address_hash))


def list_suppressions(
    session: Session, *, address: str | None = None, reason: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[Sequence[Suppression], int]:
    """A page of the list (newest first) and the total; ``address`` finds one exact address."""
    conditions = []
    if address:
        conditions.append(Suppression.address_hash == address_hasher(session)(normalise_email(address)))
    if reason:
        conditions.append(Suppression.reason == reason)
    total = session.scalar(select(func.count(Suppression.id)).where(*conditions)) or 0
    rows = session.scalars(
        select(Suppression).where(*conditions).order_by(Suppression.id.desc()).limit(limit).offset(offset)
    ).all()
    return rows, total


def remove_suppression(session: Session, *, suppression_id: int, note: str = "") -> None:
    """Take an entry off the list (audited). One made by a complaint needs a consent granted after it."""
    entry = get_scoped(session, Suppression, suppression_id)
    if entry is None:
        raise NotFound(f"There is no suppression {suppression_id} in this workspace.", field="suppression_id")
    if entry.reason == "complaint" and not _consented_since(session, entry.address_hash, entry.created_at):
        raise Conflict(
            "This address complained about our mail: it can come off the list only after the person gives "
            "a fresh consent (a grant recorded after the complaint).",
            field="suppression_id",
        )
    if entry.reason == "erasure":
        raise Conflict("An erased subject's address stays suppressed.", field="suppression_id")
    audit.record(
        session,
        action="suppression.remove",
        object_type="suppression",
        object_id=entry.id,
        summary={"reason": entry.reason, "note": note[:200]},
    )
    session.delete(entry)
    session.flush()


def _consented_since(session: Session, address_hash: str, since: datetime) -> bool:
    """Whether a contact with this address has an email consent granted (or confirmed) after ``since``."""
    query = (
        select(ConsentEvent.id)
        .join(Contact, Contact.id == ConsentEvent.contact_id)
        .join(Purpose, Purpose.id == ConsentEvent.purpose_id)
        .where(
            Contact.email_hash == address_hash,
            Purpose.channel == "email",
            ConsentEvent.event_type.in_([EventType.GRANT, EventType.CONFIRM, EventType.REFRESH]),
            ConsentEvent.legal_basis == "consent",
            ConsentEvent.occurred_at > since,
        )
        .limit(1)
    )
    return session.scalar(query) is not None


def suppress_platform(
    session: Session, *, address: str, reason: str, detail: str = ""
) -> tuple[PlatformSuppression, bool]:
    """Put ``address`` on the platform-wide list (no workspace may mail it); audited on the platform's chain."""
    if reason not in REASONS:
        raise InvalidInput(f"A suppression reason is one of {', '.join(REASONS)}.", field="reason")
    address_hash = address_hasher(session)(normalise_email(address, field_name="address"))
    existing = session.scalar(select(PlatformSuppression).where(PlatformSuppression.address_hash == address_hash))
    if existing is not None:
        return existing, False
    entry = PlatformSuppression(
        address_hash=address_hash, reason=reason, detail=detail[:1000], created_by=current_actor(session).label
    )
    session.add(entry)
    session.flush()
    audit.record(
        session,
        action="platform_suppression.add",
        object_type="platform_suppression",
        object_id=entry.id,
        summary={"reason": reason, "detail": detail[:200]},
        platform=True,
    )
    return entry, True


def remove_platform_suppression(session: Session, *, address: str, note: str = "") -> bool:
    """Take ``address`` off the platform-wide list; whether it was there (audited)."""
    address_hash = address_hasher(session)(normalise_email(address, field_name="address"))
    entry = session.scalar(select(PlatformSuppression).where(PlatformSuppression.address_hash == address_hash))
    if entry is None:
        return False
    audit.record(
        session,
        action="platform_suppression.remove",
        object_type="platform_suppression",
        object_id=entry.id,
        summary={"reason": entry.reason, "note": note[:200]},
        platform=True,
    )
    session.delete(entry)
    session.flush()
    return True
