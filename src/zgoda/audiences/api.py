"""JSON API: lists (members, where they came from), segments (live count, preview) and the audience preview."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from zgoda.audiences import service as audiences
from zgoda.audiences.eligibility import Preview
from zgoda.audiences.models import ContactList, Segment
from zgoda.audiences.schemas import (
    AudiencePreviewIn,
    AudiencePreviewOut,
    ListCreate,
    ListDetailOut,
    ListOut,
    ListSourceOut,
    MemberOut,
    MemberPage,
    MembersAdd,
    MembersAdded,
    MembersRemove,
    MembersRemoved,
    SegmentCountIn,
    SegmentCountOut,
    SegmentCreate,
    SegmentDetailOut,
    SegmentOut,
    SegmentUpdate,
)
from zgoda.consent import sources
from zgoda.core.errors import InvalidInput
from zgoda.web.context import RequestContext, require, require_existing

router = APIRouter(tags=["audiences"])
DEFAULT_PURPOSE = "email_marketing"


def _list(session: Session, list_id: int) -> object:
    return audiences.get_list(session, list_id=list_id)


def _segment(session: Session, segment_id: int) -> object:
    return audiences.get_segment(session, segment_id=segment_id)


def list_out(contact_list: ContactList, members: int) -> ListOut:
    """A list with its member count and whether the platform blocked it."""
    return ListOut(
        id=contact_list.id,
        name=contact_list.name,
        description=contact_list.description,
        members=members,
        blocked=contact_list.blocked_at is not None,
        blocked_reason=contact_list.blocked_reason,
        created_by=contact_list.created_by,
        created_at=contact_list.created_at,
    )


def member_count(session: Session, list_id: int) -> int:
    """How many contacts are on a list."""
    _, total = audiences.list_members(session, list_id=list_id, limit=1, offset=0)
    return total


def list_detail(session: Session, list_id: int) -> ListDetailOut:
    """A list with its member count and the per-source report."""
    contact_list = audiences.get_list(session, list_id=list_id)
    report = [ListSourceOut(**row) for row in audiences.list_sources(session, list_id=list_id)]
    summary = list_out(contact_list, sum(row.members for row in report))
    return ListDetailOut(**summary.model_dump(), sources=report)


def segment_out(segment: Segment) -> SegmentOut:
    """A saved segment as the API shows it."""
    return SegmentOut.model_validate(segment, from_attributes=True)


def preview_out(purpose: str, result: Preview) -> AudiencePreviewOut:
    """The preview's counts for one purpose."""
    return AudiencePreviewOut(purpose=purpose, **result.as_json())


# --- lists ------------------------------------------------------------------------------------


@router.get("/lists", response_model=list[ListOut])
def get_lists(ctx: RequestContext = require("audiences.read")) -> list[ListOut]:
    """Every list with its member count, by name."""
    return [list_out(contact_list, members) for contact_list, members in audiences.list_lists(ctx.session)]


@router.post("/lists", response_model=ListDetailOut, status_code=201)
def create_list(body: ListCreate, ctx: RequestContext = require("audiences.manage")) -> ListDetailOut:
    """A new, empty static list (names are unique in the workspace: 409 otherwise)."""
    contact_list = audiences.create_list(ctx.session, name=body.name, description=body.description)
    return list_detail(ctx.session, contact_list.id)


@router.get("/lists/{list_id}", response_model=ListDetailOut)
def get_list(list_id: int, ctx: RequestContext = require("audiences.read")) -> ListDetailOut:
    """One list with its member count and where its members came from (per source, attested or not)."""
    return list_detail(ctx.session, list_id)


@router.post("/lists/{list_id}/members", response_model=MembersAdded)
def add_members(
    list_id: int, body: MembersAdd, ctx: RequestContext = require_existing("audiences.manage", list_id=_list)
) -> MembersAdded:
    """Put contacts on the list by id, or copy a segment's current members; those already on it stay."""
    if body.segment_id is not None:
        if body.contact_ids or body.source_id is not None:
            raise InvalidInput(
                "Name either contact_ids (with source_id) or a segment_id, not both.", field="segment_id"
            )
        added = audiences.add_segment_members(ctx.session, list_id=list_id, segment_id=body.segment_id)
    else:
        if not body.contact_ids:
            raise InvalidInput("Name the contacts to add (contact_ids) or a segment_id.", field="contact_ids")
        added = audiences.add_members(
            ctx.session, list_id=list_id, contact_ids=body.contact_ids, source_id=body.source_id
        )
    return MembersAdded(added=added, members=member_count(ctx.session, list_id))


@router.post("/lists/{list_id}/members:remove", response_model=MembersRemoved)
def remove_members(
    list_id: int, body: MembersRemove, ctx: RequestContext = require_existing("audiences.manage", list_id=_list)
) -> MembersRemoved:
    """Take contacts off the list; ids not on it are ignored (``removed`` says how many were)."""
    removed = audiences.remove_members(ctx.session, list_id=list_id, contact_ids=body.contact_ids)
    return MembersRemoved(removed=removed, members=member_count(ctx.session, list_id))


@router.get("/lists/{list_id}/members", response_model=MemberPage)
def list_members(
    list_id: int,
    ctx: RequestContext = require("audiences.read"),
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> MemberPage:
    """A page of the list's members, newest first, each with the source its membership came from."""
    rows, total = audiences.list_members(ctx.session, list_id=list_id, limit=limit, offset=offset)
    names = {s.id: s.name for s in sources.list_sources(ctx.session)}
    items = [
        MemberOut(
            contact_id=contact.id,
            email=contact.email,
            first_name=contact.first_name,
            last_name=contact.last_name,
            source_id=member.source_id,
            source=names.get(member.source_id) if member.source_id is not None else None,
            added_by=member.added_by,
            added_at=member.added_at,
        )
        for member, contact in rows
    ]
    return MemberPage(items=items, total=total, limit=limit, offset=offset)


# --- segments ---------------------------------------------------------------------------------


@router.get("/segments", response_model=list[SegmentOut])
def get_segments(ctx: RequestContext = require("audiences.read")) -> list[SegmentOut]:
    """Every saved segment, by name."""
    return [segment_out(s) for s in audiences.list_segments(ctx.session)]


@router.post("/segments", response_model=SegmentDetailOut, status_code=201)
def create_segment(body: SegmentCreate, ctx: RequestContext = require("audiences.manage")) -> SegmentDetailOut:
    """A saved filter; a bad definition answers 422 naming the rule (``definition.rules[1].op``)."""
    segment = audiences.create_segment(
        ctx.session, name=body.name, definition=body.definition, description=body.description
    )
    return SegmentDetailOut(
        **segment_out(segment).model_dump(), matching=audiences.count_matching(ctx.session, segment.definition)
    )


@router.post("/segments:count", response_model=SegmentCountOut)
def count_segment(body: SegmentCountIn, ctx: RequestContext = require("audiences.read")) -> SegmentCountOut:
    """How many contacts an unsaved definition matches now (the editor's live count); nothing is written."""
    return SegmentCountOut(count=audiences.count_matching(ctx.session, body.definition))


@router.get("/segments/{segment_id}", response_model=SegmentDetailOut)
def get_segment(segment_id: int, ctx: RequestContext = require("audiences.read")) -> SegmentDetailOut:
    """One segment with how many contacts it matches now."""
    segment = audiences.get_segment(ctx.session, segment_id=segment_id)
    return SegmentDetailOut(
        **segment_out(segment).model_dump(), matching=audiences.count_matching(ctx.session, segment.definition)
    )


@router.put("/segments/{segment_id}", response_model=SegmentDetailOut)
def update_segment(
    segment_id: int,
    body: SegmentUpdate,
    ctx: RequestContext = require_existing("audiences.manage", segment_id=_segment),
) -> SegmentDetailOut:
    """Rename a segment or replace its definition (audited with before and after)."""
    segment = audiences.update_segment(ctx.session, segment_id=segment_id, definition=body.definition, name=body.name)
    return SegmentDetailOut(
        **segment_out(segment).model_dump(), matching=audiences.count_matching(ctx.session, segment.definition)
    )


@router.get("/segments/{segment_id}/preview", response_model=AudiencePreviewOut)
def preview_segment(
    segment_id: int,
    ctx: RequestContext = require("audiences.read"),
    purpose: Annotated[str, Query(min_length=1, max_length=64)] = DEFAULT_PURPOSE,
) -> AudiencePreviewOut:
    """How many of the segment a campaign for ``purpose`` would reach now, and why not the rest."""
    audiences.get_segment(ctx.session, segment_id=segment_id)
    result = audiences.preview_audience(ctx.session, purpose_key=purpose, segment_id=segment_id)
    return preview_out(purpose, result)


# --- the audience preview ---------------------------------------------------------------------


@router.post("/audience:preview", response_model=AudiencePreviewOut)
def preview_audience(body: AudiencePreviewIn, ctx: RequestContext = require("audiences.read")) -> AudiencePreviewOut:
    """For a list or a segment (exactly one) and a purpose: total, eligible, and excluded by reason."""
    result = audiences.preview_audience(
        ctx.session,
        purpose_key=body.purpose,
        list_id=body.list_id,
        segment_id=body.segment_id,
        consent_request=body.consent_request,
    )
    return preview_out(body.purpose, result)
