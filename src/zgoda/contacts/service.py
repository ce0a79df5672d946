"""Contacts: normalised addresses and numbers, identity resolution, search.

Matching order when a contact arrives: its identity in the source system
(source, external id), then the normalised email, then the phone number. When two
keys point at two different existing contacts, that is a conflict to report, never a
silent merge.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, selectinload

from zgoda.audit import service as audit
from zgoda.consent.models import ConsentState
from zgoda.contacts.models import Contact, ContactIdentity
from zgoda.core.clock import utcnow
from zgoda.core.errors import Conflict, InvalidInput, NotFound

MAX_ATTRIBUTES_BYTES = 16 * 1024
NAME_FIELDS = ("first_name", "last_name")


def normalise_email(value: str, *, field_name: str = "email") -> str:
    """A valid address, lower-cased (no DNS look-up). Lower-casing the local part too is a
    deliberate choice: no mailbox provider in practice treats case as significant.

    Exactly ``validate_email(...).normalized.lower()``, with a shortcut for the common case (an
    imported file holds millions of addresses at a few dozen domains): an ASCII dot-atom local part
    is valid and comes back unchanged, so only the domain needs ``email_validator``'s work, and
    that is remembered per domain. Anything else, and every failure, takes the full path, which
    gives the error message.
    """
    text = value.strip()
    if _DOT_ATOM_ADDRESS.fullmatch(text):
        local, domain = text.split("@")
        known = _DOMAINS.get(domain)
        if known is None:
            known = _DOMAINS[domain] = _domain_forms(domain)
            if len(_DOMAINS) > _DOMAINS_KEPT:
                _DOMAINS.clear()
        if known:
            unicode_domain, ascii_domain = known
            normalised = local + "@" + unicode_domain
            # validate_email_length: the address as given, normalised, and with the ASCII domain
            if (
                len(text) <= _MAX_ADDRESS
                and len(local) + 1 + len(ascii_domain) <= _MAX_ADDRESS
                and len(normalised.encode()) <= _MAX_ADDRESS
            ):
                return normalised.lower()
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as error:
        raise InvalidInput(f"'{value}' is not a valid email address: {error}", field=field_name) from error
    return result.normalized.lower()


# RFC 5322 dot-atom (email_validator's DOT_ATOM_TEXT) @ a domain of ASCII letters, digits, dots and hyphens
_ATEXT = r"A-Za-z0-9_!#$%&'*+\-/=?^`{|}~"
_DOT_ATOM_ADDRESS = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*@[A-Za-z0-9.\-]+")
_MAX_ADDRESS = 254  # octets (email_validator's EMAIL_MAX_LENGTH)
_DOMAINS: dict[str, tuple[str, str] | tuple[()]] = {}
_DOMAINS_KEPT = 10_000


def _domain_forms(domain: str) -> tuple[str, str] | tuple[()]:
    """The domain's normalised (Unicode) and ASCII forms as ``validate_email`` gives them; ``()`` if invalid.

    Checked on the address ``a@domain``: the domain's checks do not depend on the local part, and
    the length of the real address is checked by the caller.
    """
    try:
        result = validate_email("a@" + domain, check_deliverability=False)
    except EmailNotValidError:
        return ()
    return result.domain, result.ascii_domain


def normalise_phone(value: str, *, region: str = "PL", field_name: str = "phone") -> str:
    """The number in E.164 (``+48601234567``); numbers without a country code take ``region``."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as error:
        raise InvalidInput(f"'{value}' is not a phone number: {error}", field=field_name) from error
    if not phonenumbers.is_valid_number(number):
        raise InvalidInput(f"'{value}' is not a valid phone number.", field=field_name)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass
class ContactData:
    """What a source tells us about a person; ``None`` means "not given", never "erase"."""

    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    source_id: int | None = None
    external_id: str | None = None


@dataclass
class UpsertResult:
    contact: Contact
    outcome: str  # created, updated, unchanged
    matched_by: str | None  # identity, email, phone
    changed_fields: list[str]
    identity_added: bool


def _clean(data: ContactData, region: str) -> ContactData:
    email = normalise_email(data.email) if data.email and data.email.strip() else None
    phone = normalise_phone(data.phone, region=region) if data.phone and data.phone.strip() else None
    if email is None and phone is None and not (data.source_id and data.external_id):
        raise InvalidInput("A contact needs an email address or a phone number.", field="email")
    if data.external_id is not None and data.source_id is None:
        raise InvalidInput("An external id needs the source it comes from.", field="source")
    if len(str(data.attributes)) > MAX_ATTRIBUTES_BYTES:
        raise InvalidInput(f"Attributes are at most {MAX_ATTRIBUTES_BYTES // 1024} KB.", field="attributes")
    names = {}
    for name in NAME_FIELDS:
        value = getattr(data, name)
        value = value.strip() if isinstance(value, str) else None
        if value and len(value) > 200:
            raise InvalidInput("A name is at most 200 characters.", field=name)
        names[name] = value or None
    external = data.external_id.strip() if data.external_id else None
    return ContactData(
        email=email,
        phone=phone,
        attributes=dict(data.attributes),
        source_id=data.source_id,
        external_id=external or None,
        **names,
    )


def match_contact(session: Session, data: ContactData) -> tuple[Contact | None, str | None]:
    """The existing contact these keys name, and which key matched; raises Conflict when keys disagree."""
    by_identity = by_email = by_phone = None
    if data.source_id is not None and data.external_id:
        identity = session.scalar(
            select(ContactIdentity).where(
                ContactIdentity.source_id == data.source_id, ContactIdentity.external_id == data.external_id
            )
        )
        by_identity = identity.contact_id if identity else None
    if data.email:
        by_email = session.scalar(select(Contact.id).where(Contact.email == data.email))
    if data.phone:
        phone_matches = session.scalars(
            select(Contact.id).where(Contact.phone == data.phone, Contact.erased_at.is_(None)).limit(2)
        ).all()
        if len(phone_matches) > 1 and by_identity is None and by_email is None:
            raise Conflict(f"Several contacts share the phone number {data.phone}.", field="phone")
        by_phone = phone_matches[0] if len(phone_matches) == 1 else None
    found = [
        (key, contact_id)
        for key, contact_id in (("identity", by_identity), ("email", by_email), ("phone", by_phone))
        if contact_id is not None
    ]
    distinct = {contact_id for _, contact_id in found}
    if len(distinct) > 1:
        described = ", ".join(f"{key} → contact {contact_id}" for key, contact_id in found)
        raise Conflict(f"These details match different contacts ({described}); they are not merged.", field=found[1][0])
    if not found:
        return None, None
    key, contact_id = found[0]
    return session.get(Contact, contact_id), key


def upsert_contact(
    session: Session, data: ContactData, *, region: str = "PL", audit_changes: bool = True
) -> UpsertResult:
    """Create the contact or update the one its keys match; record the identity and (if asked) audit it."""
    data = _clean(data, region)
    contact, matched_by = match_contact(session, data)
    changed: list[str] = []
    if contact is None:
        contact = Contact(
            ref=uuid.uuid4().hex,
            email=data.email,
            phone=data.phone,
            first_name=data.first_name,
            last_name=data.last_name,
            attributes=data.attributes,
            source_id=data.source_id,
            erased_at=None,  # said here so the new object carries them loaded (the ledger reads them per event)
            restricted_at=None,
        )
        session.add(contact)
        session.flush()
        outcome = "created"
        changed = [name for name in ("email", "phone", *NAME_FIELDS) if getattr(data, name)]
    else:
        for name in ("email", "phone", *NAME_FIELDS):
            value = getattr(data, name)
            if value is not None and getattr(contact, name) != value:
                setattr(contact, name, value)
                changed.append(name)
        if data.attributes:
            merged = {**contact.attributes, **data.attributes}
            if merged != contact.attributes:
                contact.attributes = merged
                changed.append("attributes")
        if changed:
            contact.updated_at = utcnow()
        outcome = "updated" if changed else "unchanged"
    identity_added = False
    if data.source_id is not None and data.external_id:
        exists = session.scalar(
            select(ContactIdentity.id).where(
                ContactIdentity.source_id == data.source_id, ContactIdentity.external_id == data.external_id
            )
        )
        if exists is None:
            session.add(ContactIdentity(contact_id=contact.id, source_id=data.source_id, external_id=data.external_id))
            identity_added = True
            if outcome == "unchanged":
                outcome = "updated"
    session.flush()
    if audit_changes and outcome != "unchanged":
        action = (
            "contact.create"
            if outcome == "created"
            else ("contact.merge" if matched_by in ("email", "phone") and identity_added else "contact.update")
        )
        audit.record(
            session,
            action=action,
            object_type="contact",
            object_id=contact.id,
            summary={
                "fields": changed,
                "matched_by": matched_by,
                "source_id": data.source_id,
                "identity_added": identity_added,
            },
        )
    return UpsertResult(
        contact=contact, outcome=outcome, matched_by=matched_by, changed_fields=changed, identity_added=identity_added
    )


def get_contact(session: Session, *, contact_id: int) -> Contact:
    contact = session.scalar(select(Contact).where(Contact.id == contact_id).options(selectinload(Contact.identities)))
    if contact is None:
        raise NotFound("There is no such contact in this workspace.", field="contact_id")
    return contact


def find_contact(
    session: Session, *, email: str | None = None, phone: str | None = None, region: str = "PL"
) -> Contact | None:
    if email:
        return session.scalar(select(Contact).where(Contact.email == normalise_email(email)))
    if phone:
        return session.scalar(select(Contact).where(Contact.phone == normalise_phone(phone, region=region)))
    return None


def update_contact(session: Session, *, contact_id: int, changes: ContactData, region: str = "PL") -> Contact:
    """Change a contact's details by id (the API's PATCH); keys must stay unique."""
    contact = get_contact(session, contact_id=contact_id)
    if contact.erased_at is not None:
        raise Conflict("This contact was erased; its data cannot be changed.", field="contact_id")
    changed: list[str] = []
    if changes.email is not None:
        email = normalise_email(changes.email)
        clash = session.scalar(select(Contact.id).where(Contact.email == email, Contact.id != contact.id))
        if clash is not None:
            raise Conflict(f"Another contact ({clash}) has the address {email}.", field="email")
        if email != contact.email:
            contact.email = email
            changed.append("email")
    if changes.phone is not None:
        phone = normalise_phone(changes.phone, region=region)
        if phone != contact.phone:
            contact.phone = phone
            changed.append("phone")
    for name in NAME_FIELDS:
        value = getattr(changes, name)
        if value is not None and value.strip() != (getattr(contact, name) or ""):
            setattr(contact, name, value.strip() or None)
            changed.append(name)
    if changes.attributes:
        contact.attributes = {**contact.attributes, **changes.attributes}
        changed.append("attributes")
    if changed:
        contact.updated_at = utcnow()
        session.flush()
        audit.record(
            session, action="contact.update", object_type="contact", object_id=contact.id, summary={"fields": changed}
        )
    return contact


def search_contacts(
    session: Session, *, query: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[Sequence[Contact], int]:
    """Contacts whose address, number or name contains ``query``, newest first, and the total."""
    conditions = []
    if query and query.strip():
        text = query.strip().lower()  # matched literally: autoescape makes "_" and "%" plain characters
        conditions.append(
            or_(
                func.lower(Contact.email).contains(text, autoescape=True),
                Contact.phone.contains(text.replace(" ", ""), autoescape=True),
                func.lower(Contact.first_name).contains(text, autoescape=True),
                func.lower(Contact.last_name).contains(text, autoescape=True),
            )
        )
    total = session.scalar(select(func.count(Contact.id)).where(*conditions)) or 0
    rows = session.scalars(select(Contact).where(*conditions).order_by(Contact.id.desc()).limit(limit).offset(offset))
    return rows.all(), total


def consent_states_for(session: Session, *, contact_ids: Sequence[int]) -> dict[int, list[ConsentState]]:
    """The materialised consent states of several contacts in one query (for lists and badges)."""
    states: dict[int, list[ConsentState]] = {contact_id: [] for contact_id in contact_ids}
    if contact_ids:
        for state in session.scalars(select(ConsentState).where(ConsentState.contact_id.in_(contact_ids))):
            states[state.contact_id].append(state)
    return states
