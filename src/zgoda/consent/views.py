"""HTML pages: sources (attestation, evidence files), purposes and their versioned notices."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from zgoda.consent import purposes, sources
from zgoda.consent.api import evidence_download, read_upload
from zgoda.consent.models import Channel, SourceKind
from zgoda.consent.schemas import (
    NoticeCreate,
    NoticeUpdate,
    PurposeCreate,
    PurposeUpdate,
    SourceAttestation,
    SourceCreate,
    SourceUpdate,
)
from zgoda.core.errors import ZgodaError
from zgoda.web.context import RequestContext, require
from zgoda.web.forms import error_message, int_or_none
from zgoda.web.templating import render

router = APIRouter(include_in_schema=False)

FormText = Annotated[str, Form(max_length=20_000)]
FormLine = Annotated[str, Form(max_length=300)]


def _failed(ctx: RequestContext, error: ValidationError | ZgodaError) -> str:
    """Undo what the request wrote so far and give the message to show."""
    ctx.session.rollback()
    return error_message(error)


# --- sources ---------------------------------------------------------------------------------


def _sources_page(request: Request, ctx: RequestContext, *, status_code: int = 200, **extra: Any) -> Response:
    return render(
        request,
        "consent/sources.html",
        ctx,
        status_code=status_code,
        sources=sources.list_sources(ctx.session),
        kinds=list(SourceKind),
        **extra,
    )


@router.get("/w/{slug}/sources", response_class=HTMLResponse)
def sources_page(request: Request, slug: str, ctx: RequestContext = require("sources.read")) -> Response:
    """Every source, whether the owner has attested it, and how much evidence it holds."""
    return _sources_page(request, ctx, values={})


@router.post("/w/{slug}/sources", response_class=HTMLResponse)
def sources_create(
    request: Request,
    slug: str,
    name: FormLine = "",
    kind: FormLine = "",
    description: FormText = "",
    ctx: RequestContext = require("sources.manage"),
) -> Response:
    """Create a source from the form; errors re-render the list with the message."""
    values = {"name": name, "kind": kind, "description": description}
    try:
        body = SourceCreate.model_validate(values)
        source = sources.create_source(ctx.session, name=body.name, kind=body.kind.value, description=body.description)
    except (ValidationError, ZgodaError) as error:
        return _sources_page(request, ctx, status_code=422, error=_failed(ctx, error), values=values)
    return RedirectResponse(f"/w/{slug}/sources/{source.id}", status_code=303)


def _source_page(
    request: Request, ctx: RequestContext, source_id: int, *, status_code: int = 200, **extra: Any
) -> Response:
    source = sources.get_source(ctx.session, source_id=source_id)
    return render(request, "consent/source.html", ctx, status_code=status_code, source=source, **extra)


@router.get("/w/{slug}/sources/{source_id}", response_class=HTMLResponse)
def source_page(request: Request, slug: str, source_id: int, ctx: RequestContext = require("sources.read")) -> Response:
    """A source: its description, the owner's attestation and the evidence files."""
    return _source_page(request, ctx, source_id)


@router.post("/w/{slug}/sources/{source_id}", response_class=HTMLResponse)
def source_update(
    request: Request,
    slug: str,
    source_id: int,
    name: FormLine = "",
    description: FormText = "",
    ctx: RequestContext = require("sources.manage"),
) -> Response:
    """Rename or re-describe a source."""
    sources.get_source(ctx.session, source_id=source_id)
    try:
        body = SourceUpdate.model_validate({"name": name, "description": description})
        sources.update_source(ctx.session, source_id=source_id, name=body.name, description=body.description)
    except (ValidationError, ZgodaError) as error:
        return _source_page(request, ctx, source_id, status_code=422, error=_failed(ctx, error))
    return RedirectResponse(f"/w/{slug}/sources/{source_id}", status_code=303)


@router.post("/w/{slug}/sources/{source_id}/attestation", response_class=HTMLResponse)
def source_attest(
    request: Request,
    slug: str,
    source_id: int,
    attestation: FormText = "",
    ctx: RequestContext = require("sources.attest"),
) -> Response:
    """The owner states how consent is collected at this source."""
    sources.get_source(ctx.session, source_id=source_id)
    try:
        body = SourceAttestation.model_validate({"attestation": attestation})
        sources.attest_source(ctx.session, source_id=source_id, attestation=body.attestation)
    except (ValidationError, ZgodaError) as error:
        return _source_page(
            request, ctx, source_id, status_code=422, error=_failed(ctx, error), attestation_draft=attestation
        )
    return RedirectResponse(f"/w/{slug}/sources/{source_id}", status_code=303)


@router.post("/w/{slug}/sources/{source_id}/evidence", response_class=HTMLResponse)
def source_evidence_upload(
    request: Request,
    slug: str,
    source_id: int,
    file: Annotated[UploadFile | None, File()] = None,
    ctx: RequestContext = require("sources.manage"),
) -> Response:
    """Upload an evidence file (multipart) for a source."""
    sources.get_source(ctx.session, source_id=source_id)  # another workspace's id: a 404, not a form error
    try:
        sources.add_evidence(
            ctx.session,
            source_id=source_id,
            filename=(file.filename if file else None) or "evidence",
            content_type=(file.content_type if file else None) or "application/octet-stream",
            data=read_upload(file) if file else b"",
            storage_dir=ctx.settings.data_dir,
        )
    except ZgodaError as error:
        return _source_page(request, ctx, source_id, status_code=422, error=_failed(ctx, error))
    return RedirectResponse(f"/w/{slug}/sources/{source_id}", status_code=303)


@router.get("/w/{slug}/sources/{source_id}/evidence/{evidence_id}", response_class=FileResponse)
def source_evidence_download(
    slug: str, source_id: int, evidence_id: int, ctx: RequestContext = require("sources.read")
) -> FileResponse:
    """Download an evidence file as an attachment."""
    return evidence_download(ctx, source_id=source_id, evidence_id=evidence_id)


# --- purposes and notices --------------------------------------------------------------------


def _purposes_page(request: Request, ctx: RequestContext, *, status_code: int = 200, **extra: Any) -> Response:
    listed = purposes.list_purposes(ctx.session)
    notices = {p.id: purposes.list_notices(ctx.session, purpose_id=p.id) for p in listed}
    extra.setdefault("values", {})
    return render(
        request,
        "consent/purposes.html",
        ctx,
        status_code=status_code,
        purposes=listed,
        notices=notices,
        channels=list(Channel),
        **extra,
    )


@router.get("/w/{slug}/purposes", response_class=HTMLResponse)
def purposes_page(request: Request, slug: str, ctx: RequestContext = require("purposes.read")) -> Response:
    """Purposes with their channel and validity, and every version of their notices."""
    return _purposes_page(request, ctx)


@router.post("/w/{slug}/purposes", response_class=HTMLResponse)
def purposes_create(
    request: Request,
    slug: str,
    key: FormLine = "",
    name: FormLine = "",
    channel: FormLine = "",
    description: FormText = "",
    validity_days: FormLine = "",
    ctx: RequestContext = require("purposes.manage"),
) -> Response:
    """Create a purpose from the form; errors re-render the page with the message."""
    values = {"key": key, "name": name, "channel": channel, "description": description, "validity_days": validity_days}
    try:
        body = PurposeCreate.model_validate(
            {**values, "validity_days": int_or_none(validity_days, field="validity_days")}
        )
        purposes.create_purpose(
            ctx.session,
            key=body.key,
            name=body.name,
            channel=body.channel.value,
            description=body.description,
            validity_days=body.validity_days,
        )
    except (ValidationError, ZgodaError) as error:
        return _purposes_page(request, ctx, status_code=422, error=_failed(ctx, error), values=values)
    return RedirectResponse(f"/w/{slug}/purposes", status_code=303)


@router.post("/w/{slug}/purposes/{purpose_id}", response_class=HTMLResponse)
def purposes_update(
    request: Request,
    slug: str,
    purpose_id: int,
    name: FormLine = "",
    description: FormText = "",
    validity_days: FormLine = "",
    ctx: RequestContext = require("purposes.manage"),
) -> Response:
    """Rename, re-describe or change the validity (blank: no limit); the key and channel never change."""
    purposes.get_purpose(ctx.session, purpose_id=purpose_id)
    try:
        body = PurposeUpdate.model_validate(
            {
                "name": name,
                "description": description,
                "validity_days": int_or_none(validity_days, field="validity_days"),
            }
        )
        purposes.update_purpose(
            ctx.session,
            purpose_id=purpose_id,
            name=body.name,
            description=body.description,
            validity_days=body.validity_days,
        )
    except (ValidationError, ZgodaError) as error:
        return _purposes_page(request, ctx, status_code=422, error=_failed(ctx, error))
    return RedirectResponse(f"/w/{slug}/purposes", status_code=303)


@router.post("/w/{slug}/purposes/{purpose_id}/notices", response_class=HTMLResponse)
def notices_create(
    request: Request,
    slug: str,
    purpose_id: int,
    language: FormLine = "",
    title: FormLine = "",
    text: Annotated[str, Form(max_length=purposes.MAX_NOTICE_CHARS)] = "",
    ctx: RequestContext = require("purposes.manage"),
) -> Response:
    """A new version of the purpose's notice in one language."""
    purposes.get_purpose(ctx.session, purpose_id=purpose_id)
    try:
        body = NoticeCreate.model_validate({"language": language, "title": title, "text": text})
        notice = purposes.create_notice(
            ctx.session, purpose_id=purpose_id, language=body.language, title=body.title, text=body.text
        )
    except (ValidationError, ZgodaError) as error:
        return _purposes_page(request, ctx, status_code=422, error=_failed(ctx, error))
    return RedirectResponse(f"/w/{slug}/notices/{notice.id}", status_code=303)


def _notice_page(
    request: Request, ctx: RequestContext, notice_id: int, *, status_code: int = 200, **extra: Any
) -> Response:
    notice = purposes.get_notice(ctx.session, notice_id=notice_id)
    return render(request, "consent/notice.html", ctx, status_code=status_code, notice=notice, **extra)


@router.get("/w/{slug}/notices/{notice_id}", response_class=HTMLResponse)
def notice_page(
    request: Request, slug: str, notice_id: int, ctx: RequestContext = require("purposes.read")
) -> Response:
    """The exact text of one notice version, with its SHA-256."""
    return _notice_page(request, ctx, notice_id)


@router.post("/w/{slug}/notices/{notice_id}", response_class=HTMLResponse)
def notice_update(
    request: Request,
    slug: str,
    notice_id: int,
    title: FormLine = "",
    text: Annotated[str, Form(max_length=purposes.MAX_NOTICE_CHARS)] = "",
    ctx: RequestContext = require("purposes.manage"),
) -> Response:
    """Correct a notice that no consent cites yet (a used one is immutable)."""
    purposes.get_notice(ctx.session, notice_id=notice_id)
    try:
        body = NoticeUpdate.model_validate({"title": title, "text": text})
        purposes.update_notice(ctx.session, notice_id=notice_id, title=body.title or "", text=body.text or "")
    except (ValidationError, ZgodaError) as error:
        return _notice_page(request, ctx, notice_id, status_code=422, error=_failed(ctx, error))
    return RedirectResponse(f"/w/{slug}/notices/{notice_id}", status_code=303)
