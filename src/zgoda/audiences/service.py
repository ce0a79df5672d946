"""Lists and segments: create, change, fill, preview. Every change is audited (ids only, no personal data)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from zgoda.audiences.eligibility import Preview, audience_for, preview
from zgoda.audiences.filters import check_definition, compile_definition
from zgoda.audiences.models import ContactList, ListMember, Segment
from zgoda.audit import service as audit
from zgoda.consent import purposes, sources
from zgoda.contacts.models import Contact
from zgoda.core.clock import utcnow
from zgoda.core.errors import Conflict, InvalidInput, NotFound
from zgoda.core.tenancy import current_actor, current_workspace_id, get_scoped

MAX_MEMBERS_PER_CALL = 10_000


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 120:
        raise InvalidInput("A name is 1-120 characters.", field="name")
    return name


# --- lists ------------------------------------------------------------------------------------


def create_list(session: Session, *, name: str, description: str = "") -> ContactList:
    """A new, empty static list."""
    name = _check_name(name)
    if session.scalar(select(ContactList.id).where(ContactList.name == name)) is not None:
        raise Conflict(f"A list named '{name}' already exists.", field="name")
    contact_list = ContactList(name=name, description=description.strip(), created_by=current_actor(session).label)
    session.add(contact_list)
    session.flush()
    audit.record(session, action="list.create", object_type="list", object_id=contact_list.id, summary={"name": name})
    return contact_list


def list_lists(session: Session) -> list[tuple[ContactList, int]]:
    """Every list with its member count, by name."""
    counts = select(ListMember.list_id, func.count().label("members")).group_by(ListMember.list_id).subquery()
    rows = session.execute(
        select(ContactList, func.coalesce(counts.c.members, 0))
        .outerjoin(counts, counts.c.list_id == ContactList.id)
        .order_by(ContactList.name)
    )
    return [(contact_list, int(members)) for contact_list, members in rows]


def get_list(session: Session, *, list_id: int, field: str = "list_id") -> ContactList:
    contact_list = get_scoped(session, ContactList, list_id)
    if contact_list is None:
        raise NotFound(f"There is no list {list_id} in this workspace.", field=field)
    return contact_list


def list_by_name(session: Session, name: str, *, field: str = "list") -> ContactList:
    contact_list = session.scalar(select(ContactList).where(ContactList.name == name))
    if contact_list is None:
        raise InvalidInput(f"There is no list named '{name}' in this workspace.", field=field)
    return contact_list


def add_members(session: Session, *, list_id: int, contact_ids: Iterable[int], source_id: int | None = None) -> int:
    """Put contacts on a list (those already on it stay as they were); how many were added.

    ``source_id`` records where these memberships came from; without it each member's own source counts.
    """
    contact_list = get_list(session, list_id=list_id)
    wanted = sorted(set(contact_ids))
    if len(wanted) > MAX_MEMBERS_PER_CALL:
        raise InvalidInput(f"At most {MAX_MEMBERS_PER_CALL} contacts per call.", field="contact_ids")
    if source_id is not None:
        sources.get_source(session, source_id=source_id, field="source_id")
    found = dict(session.execute(select(Contact.id, Contact.source_id).where(Contact.id.in_(wanted))).all())
    missing = [contact_id for contact_id in wanted if contact_id not in found]
    if missing:
        raise InvalidInput(f"There is no contact {missing[0]} in this workspace.", field="contact_ids")
    present = set(
        session.scalars(
            select(ListMember.contact_id).where(ListMember.list_id == list_id, ListMember.contact_id.in_(wanted))
        )
    )
    new = [contact_id for contact_id in wanted if contact_id not in present]
    if new:
        actor = current_actor(session).label
        now = utcnow()
        workspace_id = current_workspace_id(session)
        session.execute(
            insert(ListMember),
            [
                {
                    "workspace_id": workspace_id,
                    "list_id": list_id,
                    "contact_id": contact_id,
                    "source_id": source_id if source_id is not None else found[contact_id],
                    "added_by": actor,
                    "added_at": now,
                }
                for contact_id in new
            ],
        )
        audit.record(
            session,
            action="list.add_members",
            object_type="list",
            object_id=contact_list.id,
            summary={"added": len(new), "source_id": source_id},
        )
    return len(new)


def add_segment_members(session: Session, *, list_id: int, segment_id: int) -> int:
    """Copy a segment's current members onto a static list (a snapshot)."""
    segment = get_segment(session, segment_id=segment_id)
    condition = compile_definition(session, check_definition(session, segment.definition))
    ids = list(session.scalars(select(Contact.id).where(condition, Contact.erased_at.is_(None))))
    added = 0
    for start in range(0, len(ids), MAX_MEMBERS_PER_CALL):
        added += add_members(session, list_id=list_id, contact_ids=ids[start : start + MAX_MEMBERS_PER_CALL])
    return added


def remove_members(session: Session, *, list_id: int, contact_ids: Iterable[int]) -> int:
    """Take contacts off a list; how many were on it."""
    contact_list = get_list(session, list_id=list_id)
    wanted = sorted(set(contact_ids))
    result = session.execute(
        delete(ListMember).where(ListMember.list_id == list_id, ListMember.contact_id.in_(wanted)),
        execution_options={"synchronize_session": False},
    )
    removed = int(getattr(result, "rowcount", 0) or 0)
    if removed:
        audit.record(
            session,
            action="list.remove_members",
            object_type="list",
            object_id=contact_list.id,
            summary={"removed": removed},
        )
    return removed


def list_members(
    session: Session, *, list_id: int, limit: int = 50, offset: int = 0
) -> tuple[Sequence[tuple[ListMember, Contact]], int]:
    """A page of a list's members (newest first) and the total."""
    get_list(session, list_id=list_id)
    total = session.scalar(select(func.count()).select_from(ListMember).where(ListMember.list_id == list_id)) or 0
    rows = session.execute(
        select(ListMember, Contact)
        .join(Contact, Contact.id == ListMember.contact_id)
        .where(ListMember.list_id == list_id)
        .order_by(ListMember.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [(member, contact) for member, contact in rows], total


def list_sources(session: Session, *, list_id: int) -> list[dict[str, Any]]:
    """Where a list's members came from: per source, how many, and whether the source is attested."""
    from zgoda.consent.models import Source

    get_list(session, list_id=list_id)
    rows = session.execute(
        select(Source.id, Source.name, Source.kind, Source.attested_at, func.count(ListMember.id))
        .select_from(ListMember)
        .outerjoin(Source, Source.id == ListMember.source_id)
        .where(ListMember.list_id == list_id)
        .group_by(Source.id, Source.name, Source.kind, Source.attested_at)
        .order_by(func.count(ListMember.id).desc())
    )
    return [
        {
            "source_id": source_id,
            "name": name or "(unknown)",
            "kind": kind,
            "attested": attested_at is not None,
            "members": count,
        }
        for source_id, name, kind, attested_at, count in rows
    ]


# --- segments ---------------------------------------------------------------------------------


def create_segment(session: Session, *, name: str, definition: Any, description: str = "") -> Segment:
    """A saved filter; its definition is checked now, so it always compiles later."""
    name = _check_name(name)
    if session.scalar(select(Segment.id).where(Segment.name == name)) is not None:
        raise Conflict(f"A segment named '{name}' already exists.", field="name")
    checked = check_definition(session, definition)
    segment = Segment(
        name=name,
        description=description.strip(),
        definition=checked.as_json(),
        created_by=current_actor(session).label,
    )
    session.add(segment)
    session.flush()
    audit.record(
        session,
        action="segment.create",
        object_type="segment",
        object_id=segment.id,
        summary={"name": name, "definition": checked.as_json()},
    )
    return segment


def update_segment(session: Session, *, segment_id: int, definition: Any = None, name: str | None = None) -> Segment:
    """Change a segment's name or definition (audited with before and after)."""
    segment = get_segment(session, segment_id=segment_id)
    before = {"name": segment.name, "definition": segment.definition}
    if name is not None:
        name = _check_name(name)
        clash = session.scalar(select(Segment.id).where(Segment.name == name, Segment.id != segment.id))
        if clash is not None:
            raise Conflict(f"A segment named '{name}' already exists.", field="name")
        segment.name = name
    if definition is not None:
        segment.definition = check_definition(session, definition).as_json()
    segment.updated_at = utcnow()
    audit.record(
        session,
        action="segment.update",
        object_type="segment",
        object_id=segment.id,
        summary={"before": before, "after": {"name": segment.name, "definition": segment.definition}},
    )
    return segment


def list_segments(session: Session) -> Sequence[Segment]:
    return session.scalars(select(Segment).order_by(Segment.name)).all()


def get_segment(session: Session, *, segment_id: int, field: str = "segment_id") -> Segment:
    segment = get_scoped(session, Segment, segment_id)
    if segment is None:
        raise NotFound(f"There is no segment {segment_id} in this workspace.", field=field)
    return segment


def segment_by_name(session: Session, name: str, *, field: str = "segment") -> Segment:
    segment = session.scalar(select(Segment).where(Segment.name == name))
    if segment is None:
        raise InvalidInput(f"There is no segment named '{name}' in this workspace.", field=field)
    return segment


def count_matching(session: Session, definition: Any) -> int:
    """How many contacts a (not yet saved) definition matches: the live count while editing."""
    condition = compile_definition(session, check_definition(session, definition))
    return session.scalar(select(func.count(Contact.id)).where(condition, Contact.erased_at.is_(None))) or 0


def preview_audience(
    session: Session,
    *,
    purpose_key: str,
    list_id: int | None = None,
    segment_id: int | None = None,
    consent_request: bool = False,
) -> Preview:
    """How many of a list or segment a campaign for ``purpose_key`` would reach now, and why not the rest.

    With ``consent_request``: a campaign asking for that purpose's consent (it also reaches pending contacts).
    """
    if (list_id is None) == (segment_id is None):
        raise InvalidInput("Name exactly one of a list or a segment.", field="list_id")
    purpose = purposes.purpose_by_key(session, purpose_key, field="purpose")
    if list_id is not None:
        get_list(session, list_id=list_id)
    if segment_id is not None:
        get_segment(session, segment_id=segment_id)
    audience = audience_for(
        session, purpose_id=purpose.id, list_id=list_id, segment_id=segment_id, consent_request=consent_request
    )
    return preview(session, audience)
