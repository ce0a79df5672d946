"""Purposes (consent types bound to a channel) and their versioned notices."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zgoda.audit import service as audit
from zgoda.consent.models import Channel, Notice, Purpose
from zgoda.core.crypto import sha256_hex
from zgoda.core.errors import Conflict, InvalidInput, NotFound
from zgoda.core.tenancy import unscoped

PURPOSE_KEY = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}(?:-[A-Z]{2})?$")
MAX_NOTICE_CHARS = 100_000

DEFAULT_PURPOSES: list[tuple[str, str, Channel, str]] = [
    ("email_marketing", "Email marketing", Channel.EMAIL, "Newsletters and offers sent by email."),
    ("sms_marketing", "SMS marketing", Channel.SMS, "Offers sent by text message."),
    ("phone_marketing", "Phone marketing", Channel.PHONE, "Offers presented in phone calls."),
    ("profiling", "Profiling and tracking", Channel.NONE, "Opens, clicks and interests used to tailor messages."),
    ("third_party_sharing", "Sharing with partners", Channel.NONE, "Contact data shared with named partners."),
]


def install_defaults(session: Session, *, workspace_id: int) -> None:
    """Create the default purposes in a new workspace (no notices: those are the controller's texts)."""
    with unscoped(session):  # called while the workspace itself is being created
        for key, name, channel, description in DEFAULT_PURPOSES:
            session.add(
                Purpose(workspace_id=workspace_id, key=key, name=name, channel=channel.value, description=description)
            )
        session.flush()


def _check_channel(channel: str) -> str:
    try:
        return Channel(channel).value
    except ValueError as error:
        raise InvalidInput(f"Unknown channel '{channel}'; use one of {', '.join(Channel)}.", field="channel") from error


def _check_validity(days: int | None) -> int | None:
    if days is not None and not 1 <= days <= 3650:
        raise InvalidInput("A validity period is 1 to 3650 days (or none).", field="validity_days")
    return days


def create_purpose(
    session: Session, *, key: str, name: str, channel: str, description: str = "", validity_days: int | None = None
) -> Purpose:
    """A user-defined purpose; the key is what APIs and import columns name."""
    key = key.strip()
    if not PURPOSE_KEY.match(key):
        raise InvalidInput("A purpose key is 2-64 lower-case letters, digits and underscores.", field="key")
    if not name.strip():
        raise InvalidInput("A purpose needs a name.", field="name")
    if session.scalar(select(Purpose.id).where(Purpose.key == key)) is not None:
        raise Conflict(f"A purpose '{key}' already exists.", field="key")
    purpose = Purpose(
        key=key,
        name=name.strip(),
        channel=_check_channel(channel),
        description=description.strip(),
        validity_days=_check_validity(validity_days),
    )
    session.add(purpose)
    session.flush()
    audit.record(
        session,
        action="purpose.create",
        object_type="purpose",
        object_id=purpose.id,
        summary={"after": {"key": key, "channel": purpose.channel, "validity_days": validity_days}},
    )
    return purpose


def update_purpose(
    session: Session,
    *,
    purpose_id: int,
    name: str | None = None,
    description: str | None = None,
    validity_days: int | Literal["keep"] | None = "keep",
) -> Purpose:
    """Rename or re-describe a purpose, or change its validity; the key and channel never change."""
    purpose = get_purpose(session, purpose_id=purpose_id)
    before = {"name": purpose.name, "validity_days": purpose.validity_days}
    if name is not None:
        if not name.strip():
            raise InvalidInput("A purpose needs a name.", field="name")
        purpose.name = name.strip()
    if description is not None:
        purpose.description = description.strip()
    if validity_days != "keep":
        purpose.validity_days = _check_validity(validity_days)
    session.flush()
    audit.record(
        session,
        action="purpose.update",
        object_type="purpose",
        object_id=purpose.id,
        summary={"before": before, "after": {"name": purpose.name, "validity_days": purpose.validity_days}},
    )
    return purpose


def list_purposes(session: Session) -> Sequence[Purpose]:
    return session.scalars(select(Purpose).order_by(Purpose.id)).all()


def get_purpose(session: Session, *, purpose_id: int) -> Purpose:
    purpose = session.scalar(select(Purpose).where(Purpose.id == purpose_id))
    if purpose is None:
        raise NotFound("There is no such purpose in this workspace.", field="purpose_id")
    return purpose


def purpose_by_key(session: Session, key: str, *, field: str = "purpose") -> Purpose:
    purpose = session.scalar(select(Purpose).where(Purpose.key == key))
    if purpose is None:
        known = ", ".join(p.key for p in list_purposes(session))
        raise InvalidInput(f"Unknown purpose '{key}'; this workspace has: {known}.", field=field)
    return purpose


def get_purpose_by_key(session: Session, key: str, *, field: str = "purpose_key") -> Purpose:
    """The purpose an address names by key (a path, not a body field): unknown is a 404."""
    purpose = session.scalar(select(Purpose).where(Purpose.key == key))
    if purpose is None:
        raise NotFound(f"There is no purpose '{key}' in this workspace.", field=field)
    return purpose


def _check_language(language: str) -> str:
    language = language.strip()
    if not LANGUAGE_TAG.match(language):
        raise InvalidInput("A language is a tag such as 'pl', 'en' or 'en-GB'.", field="language")
    return language


def _check_text(title: str, text: str) -> None:
    if not title.strip():
        raise InvalidInput("A notice needs a title.", field="title")
    if not text.strip():
        raise InvalidInput("A notice needs its text: the exact words shown to the person.", field="text")
    if len(text) > MAX_NOTICE_CHARS:
        raise InvalidInput(f"A notice is at most {MAX_NOTICE_CHARS} characters.", field="text")


def create_notice(session: Session, *, purpose_id: int, language: str, title: str, text: str) -> Notice:
    """The next version of a purpose's notice in ``language``, stored with the SHA-256 of its text."""
    purpose = get_purpose(session, purpose_id=purpose_id)
    language = _check_language(language)
    _check_text(title, text)
    latest = session.scalar(
        select(func.max(Notice.version)).where(Notice.purpose_id == purpose.id, Notice.language == language)
    )
    notice = Notice(
        purpose_id=purpose.id,
        language=language,
        version=(latest or 0) + 1,
        title=title.strip(),
        text=text,
        sha256=sha256_hex(text),
    )
    session.add(notice)
    session.flush()
    audit.record(
        session,
        action="notice.create",
        object_type="notice",
        object_id=notice.id,
        summary={
            "after": {"purpose": purpose.key, "language": language, "version": notice.version, "sha256": notice.sha256}
        },
    )
    return notice


def update_notice(session: Session, *, notice_id: int, title: str, text: str) -> Notice:
    """Correct a notice that no consent cites yet; a used notice is immutable (make a new version)."""
    notice = get_notice(session, notice_id=notice_id)
    if notice.first_used_at is not None:
        raise Conflict(
            "This notice has been shown to people and is now immutable; create a new version.", field="notice_id"
        )
    _check_text(title, text)
    before = notice.sha256
    notice.title, notice.text, notice.sha256 = title.strip(), text, sha256_hex(text)
    session.flush()
    audit.record(
        session,
        action="notice.update",
        object_type="notice",
        object_id=notice.id,
        summary={"before": {"sha256": before}, "after": {"sha256": notice.sha256}},
    )
    return notice


def get_notice(session: Session, *, notice_id: int) -> Notice:
    notice = session.scalar(select(Notice).where(Notice.id == notice_id))
    if notice is None:
        raise NotFound("There is no such notice in this workspace.", field="notice_id")
    return notice


def list_notices(session: Session, *, purpose_id: int) -> Sequence[Notice]:
    return session.scalars(
        select(Notice).where(Notice.purpose_id == purpose_id).order_by(Notice.language, Notice.version)
    ).all()


def resolve_notice(
    session: Session,
    *,
    purpose: Purpose,
    notice_id: int | None = None,
    version: int | None = None,
    language: str | None = None,
) -> Notice | None:
    """The notice an event cites: by id, or by version and language; it must belong to ``purpose``."""
    if notice_id is None and version is None:
        return None
    if notice_id is not None:
        notice = session.scalar(select(Notice).where(Notice.id == notice_id))
        if notice is None:
            raise InvalidInput(f"There is no notice {notice_id} in this workspace.", field="notice_id")
    else:
        if not language:
            raise InvalidInput("Name the notice's language with its version.", field="language")
        notice = session.scalar(
            select(Notice).where(
                Notice.purpose_id == purpose.id, Notice.version == version, Notice.language == language
            )
        )
        if notice is None:
            raise InvalidInput(
                f"Purpose '{purpose.key}' has no notice version {version} in '{language}'.", field="notice_version"
            )
    if notice.purpose_id != purpose.id:
        raise InvalidInput(f"Notice {notice.id} belongs to another purpose, not '{purpose.key}'.", field="notice_id")
    if language and notice.language != language:
        raise InvalidInput(f"Notice {notice.id} is in '{notice.language}', not '{language}'.", field="language")
    return notice


def current_notice(session: Session, *, purpose_id: int, language: str) -> Notice | None:
    """The newest notice of a purpose in ``language`` (``pl`` also finds ``pl-PL``); None if it has none."""
    notices = session.scalars(
        select(Notice).where(Notice.purpose_id == purpose_id).order_by(Notice.version.desc(), Notice.id.desc())
    )
    return next((n for n in notices if n.language == language or n.language.startswith(f"{language}-")), None)
