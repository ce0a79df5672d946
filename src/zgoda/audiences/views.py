"""HTML pages: lists (members, where they came from, adding members) and segments (editor, live count, preview)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from zgoda.audiences import service as audiences
from zgoda.audiences.api import DEFAULT_PURPOSE
from zgoda.audiences.eligibility import Preview
from zgoda.audiences.schemas import EXCLUSION_LABELS, ListCreate
from zgoda.consent import purposes, sources
from zgoda.core.errors import InvalidInput, ZgodaError
from zgoda.web.context import RequestContext, is_row_id, require
from zgoda.web.forms import error_message, int_or_none
from zgoda.web.templating import render

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
MAX_DEFINITION_CHARS = 50_000
EXAMPLE_DEFINITION = json.dumps(
    {
        "match": "all",
        "rules": [
            {"field": "consent", "purpose": "email_marketing", "op": "is", "value": "granted"},
            {"field": "attribute", "key": "city", "op": "eq", "value": "Kraków"},
        ],
    },
    indent=2,
    ensure_ascii=False,
)

FormLine = Annotated[str, Form(max_length=300)]
FormText = Annotated[str, Form(max_length=4000)]
FormIds = Annotated[str, Form(max_length=200_000)]
FormDefinition = Annotated[str, Form(max_length=MAX_DEFINITION_CHARS)]


def _failed(ctx: RequestContext, error: ValidationError | ZgodaError) -> str:
    """Undo what the request wrote so far and give the message to show."""
    ctx.session.rollback()
    return error_message(error)


def parse_ids(text: str, *, field: str) -> list[int]:
    """Contact ids typed into a form: whole numbers separated by commas, spaces or new lines."""
    ids = []
    for part in re.split(r"[\s,;]+", text.strip()):
        if not part:
            continue
        if not is_row_id(part):
            raise InvalidInput(f"'{part[:40]}' is not a contact id (a whole number).", field=field)
        ids.append(int(part))
    if not ids:
        raise InvalidInput("Give at least one contact id.", field=field)
    return ids


def parse_definition(text: str) -> Any:
    """A segment definition typed as JSON; a syntax error names the line and column."""
    if not text.strip():
        raise InvalidInput('Write the definition as JSON: {"match": "all", "rules": [...]}.', field="definition")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(
            f"Not valid JSON: {error.msg} (line {error.lineno}, column {error.colno}).", field="definition"
        ) from error


def email_purposes(ctx: RequestContext) -> list[Any]:
    """The purposes an audience can be previewed for (email ones first)."""
    listed = purposes.list_purposes(ctx.session)
    return sorted(listed, key=lambda p: (p.channel != "email", p.key))


def preview_context(
    ctx: RequestContext,
    *,
    purpose: str,
    list_id: int | None = None,
    segment_id: int | None = None,
    consent_request: bool = False,
) -> dict[str, Any]:
    """Variables for the ``audiences/preview.html`` partial: the counts, or the reason there are none."""
    try:
        result: Preview | None = audiences.preview_audience(
            ctx.session, purpose_key=purpose, list_id=list_id, segment_id=segment_id, consent_request=consent_request
        )
        error = None
    except InvalidInput as failure:
        result, error = None, error_message(failure)
    return {"preview": result, "preview_error": error, "preview_purpose": purpose, "exclusion_labels": EXCLUSION_LABELS}


# --- lists ------------------------------------------------------------------------------------


def _lists_page(request: Request, ctx: RequestContext, *, status_code: int = 200, **extra: Any) -> Response:
    extra.setdefault("values", {})
    return render(
        request,
        "audiences/lists.html",
        ctx,
        status_code=status_code,
        lists=audiences.list_lists(ctx.session),
        segments=audiences.list_segments(ctx.session),
        **extra,
    )


@router.get("/w/{slug}/lists", response_class=HTMLResponse)
def lists_page(request: Request, slug: str, ctx: RequestContext = require("audiences.read")) -> Response:
    """Every list with its member count, and the segments."""
    return _lists_page(request, ctx)


@router.post("/w/{slug}/lists", response_class=HTMLResponse)
def lists_create(
    request: Request,
    slug: str,
    name: FormLine = "",
    description: FormText = "",
    ctx: RequestContext = require("audiences.manage"),
) -> Response:
    """Create a list from the form; errors re-render the index with the message."""
    values = {"name": name, "description": description}
    try:
        body = ListCreate.model_validate(values)
        contact_list = audiences.create_list(ctx.session, name=body.name, description=body.description)
    except (ValidationError, ZgodaError) as error:
        return _lists_page(request, ctx, status_code=422, error=_failed(ctx, error), values=values)
    return RedirectResponse(f"/w/{slug}/lists/{contact_list.id}", status_code=303)


def _list_page(
    request: Request, ctx: RequestContext, list_id: int, *, offset: int = 0, status_code: int = 200, **extra: Any
) -> Response:
    contact_list = audiences.get_list(ctx.session, list_id=list_id)
    rows, total = audiences.list_members(ctx.session, list_id=list_id, limit=PAGE_SIZE, offset=offset)
    all_sources = sources.list_sources(ctx.session)
    extra.setdefault("values", {})
    return render(
        request,
        "audiences/list.html",
        ctx,
        status_code=status_code,
        contact_list=contact_list,
        rows=rows,
        total=total,
        offset=offset,
        page_size=PAGE_SIZE,
        report=audiences.list_sources(ctx.session, list_id=list_id),
        sources=all_sources,
        source_names={s.id: s.name for s in all_sources},
        segments=audiences.list_segments(ctx.session),
        **extra,
    )


@router.get("/w/{slug}/lists/{list_id}", response_class=HTMLResponse)
def list_page(
    request: Request,
    slug: str,
    list_id: int,
    ctx: RequestContext = require("audiences.read"),
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """A list: its members (paged), where they came from, and forms to add or remove members."""
    return _list_page(request, ctx, list_id, offset=offset)


@router.post("/w/{slug}/lists/{list_id}/members", response_class=HTMLResponse)
def list_add_members(
    request: Request,
    slug: str,
    list_id: int,
    contact_ids: FormIds = "",
    source_id: FormLine = "",
    ctx: RequestContext = require("audiences.manage"),
) -> Response:
    """Add contacts by id (optionally recording the source they came from)."""
    audiences.get_list(ctx.session, list_id=list_id)
    values = {"contact_ids": contact_ids, "source_id": source_id}
    try:
        ids = parse_ids(contact_ids, field="contact_ids")
        added = audiences.add_members(
            ctx.session, list_id=list_id, contact_ids=ids, source_id=int_or_none(source_id, field="source_id")
        )
    except ZgodaError as error:
        return _list_page(request, ctx, list_id, status_code=422, error=_failed(ctx, error), values=values)
    return RedirectResponse(f"/w/{slug}/lists/{list_id}?added={added}", status_code=303)


@router.post("/w/{slug}/lists/{list_id}/members/segment", response_class=HTMLResponse)
def list_add_segment(
    request: Request,
    slug: str,
    list_id: int,
    segment_id: FormLine = "",
    ctx: RequestContext = require("audiences.manage"),
) -> Response:
    """Copy a segment's current members onto the list (a snapshot)."""
    audiences.get_list(ctx.session, list_id=list_id)
    try:
        chosen = int_or_none(segment_id, field="segment_id")
        if chosen is None:
            raise InvalidInput("Choose a segment.", field="segment_id")
        audiences.get_segment(ctx.session, segment_id=chosen)  # NotFound here is a form error, not a missing page
        added = audiences.add_segment_members(ctx.session, list_id=list_id, segment_id=chosen)
    except ZgodaError as error:
        return _list_page(request, ctx, list_id, status_code=422, error=_failed(ctx, error))
    return RedirectResponse(f"/w/{slug}/lists/{list_id}?added={added}", status_code=303)


@router.post("/w/{slug}/lists/{list_id}/members/remove", response_class=HTMLResponse)
def list_remove_members(
    request: Request,
    slug: str,
    list_id: int,
    contact_ids: FormIds = "",
    ctx: RequestContext = require("audiences.manage"),
) -> Response:
    """Take contacts off the list."""
    audiences.get_list(ctx.session, list_id=list_id)
    try:
        removed = audiences.remove_members(
            ctx.session, list_id=list_id, contact_ids=parse_ids(contact_ids, field="contact_ids")
        )
    except ZgodaError as error:
        return _list_page(request, ctx, list_id, status_code=422, error=_failed(ctx, error))
    return RedirectResponse(f"/w/{slug}/lists/{list_id}?removed={removed}", status_code=303)


# --- segments ---------------------------------------------------------------------------------


def _segments_page(request: Request, ctx: RequestContext, *, status_code: int = 200, **extra: Any) -> Response:
    extra.setdefault("values", {"definition": EXAMPLE_DEFINITION})
    return render(
        request,
        "audiences/segments.html",
        ctx,
        status_code=status_code,
        segments=audiences.list_segments(ctx.session),
        lists=audiences.list_lists(ctx.session),
        sources=sources.list_sources(ctx.session),
        purposes=email_purposes(ctx),
        **extra,
    )


@router.get("/w/{slug}/segments", response_class=HTMLResponse)
def segments_page(request: Request, slug: str, ctx: RequestContext = require("audiences.read")) -> Response:
    """Every segment, and the editor for a new one."""
    return _segments_page(request, ctx)


@router.post("/w/{slug}/segments", response_class=HTMLResponse)
def segments_create(
    request: Request,
    slug: str,
    name: FormLine = "",
    description: FormText = "",
    definition: FormDefinition = "",
    ctx: RequestContext = require("audiences.manage"),
) -> Response:
    """Create a segment; a bad definition re-renders the editor naming the rule."""
    values = {"name": name, "description": description, "definition": definition}
    try:
        segment = audiences.create_segment(
            ctx.session, name=name, definition=parse_definition(definition), description=description
        )
    except ZgodaError as error:
        return _segments_page(request, ctx, status_code=422, error=_failed(ctx, error), values=values)
    return RedirectResponse(f"/w/{slug}/segments/{segment.id}", status_code=303)


@router.post("/w/{slug}/segments/count", response_class=HTMLResponse)
def segments_count(
    request: Request, slug: str, definition: FormDefinition = "", ctx: RequestContext = require("audiences.read")
) -> Response:
    """The live count of the definition being typed (an htmx fragment; nothing is written)."""
    try:
        count: int | None = audiences.count_matching(ctx.session, parse_definition(definition))
        error = None
    except ZgodaError as failure:
        count, error = None, _failed(ctx, failure)
    return render(request, "audiences/count.html", ctx, count=count, count_error=error)


def _segment_page(
    request: Request, ctx: RequestContext, segment_id: int, *, purpose: str, status_code: int = 200, **extra: Any
) -> Response:
    segment = audiences.get_segment(ctx.session, segment_id=segment_id)
    extra.setdefault("values", {"name": segment.name, "definition": json.dumps(segment.definition, indent=2)})
    try:
        count: int | None = audiences.count_matching(ctx.session, segment.definition)
        count_error = None
    except InvalidInput as failure:  # a list or source it names was changed since: say so, do not fail the page
        count, count_error = None, error_message(failure)
    return render(
        request,
        "audiences/segment.html",
        ctx,
        status_code=status_code,
        segment=segment,
        count=count,
        count_error=count_error,
        purposes=email_purposes(ctx),
        lists=audiences.list_lists(ctx.session),
        sources=sources.list_sources(ctx.session),
        **preview_context(ctx, purpose=purpose, segment_id=segment.id),
        **extra,
    )


@router.get("/w/{slug}/segments/{segment_id}", response_class=HTMLResponse)
def segment_page(
    request: Request,
    slug: str,
    segment_id: int,
    ctx: RequestContext = require("audiences.read"),
    purpose: Annotated[str, Query(max_length=64)] = DEFAULT_PURPOSE,
) -> Response:
    """A segment: its editor with the live count, and who a campaign for a chosen purpose would reach."""
    return _segment_page(request, ctx, segment_id, purpose=purpose)


@router.post("/w/{slug}/segments/{segment_id}", response_class=HTMLResponse)
def segment_update(
    request: Request,
    slug: str,
    segment_id: int,
    name: FormLine = "",
    definition: FormDefinition = "",
    ctx: RequestContext = require("audiences.manage"),
) -> Response:
    """Save a segment's name and definition."""
    audiences.get_segment(ctx.session, segment_id=segment_id)
    values = {"name": name, "definition": definition}
    try:
        audiences.update_segment(
            ctx.session, segment_id=segment_id, definition=parse_definition(definition), name=name or None
        )
    except ZgodaError as error:
        message = _failed(ctx, error)
        return _segment_page(
            request, ctx, segment_id, purpose=DEFAULT_PURPOSE, status_code=422, error=message, values=values
        )
    return RedirectResponse(f"/w/{slug}/segments/{segment_id}", status_code=303)


@router.get("/w/{slug}/segments/{segment_id}/preview", response_class=HTMLResponse)
def segment_preview(
    request: Request,
    slug: str,
    segment_id: int,
    ctx: RequestContext = require("audiences.read"),
    purpose: Annotated[str, Query(max_length=64)] = DEFAULT_PURPOSE,
) -> Response:
    """The eligibility preview for one purpose (an htmx fragment)."""
    audiences.get_segment(ctx.session, segment_id=segment_id)
    return render(
        request, "audiences/preview.html", ctx, **preview_context(ctx, purpose=purpose, segment_id=segment_id)
    )
