"""Import pages: upload, map columns with sample values, dry run, progress, history."""

from __future__ import annotations

import re
from itertools import islice
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from zgoda.consent import purposes, sources
from zgoda.contacts.imports import service as imports
from zgoda.contacts.imports.mapping import FIELD_SYNONYMS, ColumnMapping
from zgoda.contacts.imports.reader import inspect, read_rows
from zgoda.contacts.imports.tasks import run_import
from zgoda.core.errors import InvalidInput, ZgodaError
from zgoda.core.tasks import enqueue_after_commit
from zgoda.web.context import RequestContext, request_form, require
from zgoda.web.forms import int_or_none
from zgoda.web.templating import render

router = APIRouter(include_in_schema=False)
STAGED_NAME = re.compile(r"^[0-9a-f]{64}(\.[a-z0-9]{1,7})?$")
FIELD_CHOICES = list(FIELD_SYNONYMS)


def _history(request: Request, ctx: RequestContext, *, error: str | None = None, status_code: int = 200) -> Response:
    jobs = imports.list_jobs(ctx.session, limit=100)
    names = {s.id: s.name for s in sources.list_sources(ctx.session)}
    return render(
        request,
        "imports/history.html",
        ctx,
        jobs=jobs,
        source_names=names,
        sources=sources.list_sources(ctx.session),
        error=error,
        status_code=status_code,
    )


@router.get("/w/{slug}/imports", response_class=HTMLResponse)
def history(request: Request, slug: str, ctx: RequestContext = require("imports.read")) -> Response:
    return _history(request, ctx)


@router.post("/w/{slug}/imports/upload", response_class=HTMLResponse)
def upload(
    request: Request,
    slug: str,
    file: Annotated[UploadFile, File()],
    source_id: Annotated[int, Form()],
    ctx: RequestContext = require("imports.run"),
) -> Response:
    """Stage the file and show its columns with sample values and the proposed mapping."""
    try:
        source = sources.get_source(ctx.session, source_id=source_id, field="source")
        staged = imports.stage_file(file.file, filename=file.filename or "upload", data_dir=ctx.settings.data_dir)
        info = inspect(staged.path)
        planned_mapping = _proposed(ctx, source, info.headers)
        samples = [values for _, values, _ in islice(read_rows(staged.path, info), 3)]
    except ZgodaError as error:
        return _history(request, ctx, error=error.detail, status_code=422)
    return render(
        request,
        "imports/mapping.html",
        ctx,
        staged=staged,
        staged_name=staged.path.name,
        info=info,
        samples=samples,
        source=source,
        proposed=planned_mapping.used_headers(),
        fields=FIELD_CHOICES,
        purposes=purposes.list_purposes(ctx.session),
    )


def _proposed(ctx: RequestContext, source: object, headers: list[str]) -> ColumnMapping:
    from zgoda.contacts.imports.mapping import auto_map

    saved = (getattr(source, "settings", None) or {}).get("mapping")
    if saved:
        candidate = ColumnMapping.from_json(saved)
        if set(candidate.used_headers()) <= set(headers):
            return candidate
    return auto_map(headers, {p.key for p in purposes.list_purposes(ctx.session)})[0]


@router.post("/w/{slug}/imports/start")
def start(
    request: Request,
    slug: str,
    form: FormData = Depends(request_form),
    ctx: RequestContext = require("imports.run"),
) -> Response:
    """Create the job from the mapping form (``column:<header>`` = target) and queue it."""
    staged_name = str(form.get("staged_name", ""))
    if not STAGED_NAME.match(staged_name):
        raise InvalidInput("The uploaded file reference is not valid; upload the file again.", field="staged_name")
    path = ctx.settings.data_dir / "imports" / staged_name
    if not path.is_file():
        raise InvalidInput("The uploaded file is no longer here; upload it again.", field="staged_name")
    mapping = ColumnMapping()
    for key, value in form.multi_items():
        if not key.startswith("column:") or not isinstance(value, str) or not value:
            continue
        header = key.removeprefix("column:")
        if value.startswith("consent:"):
            mapping.consents[value.removeprefix("consent:")] = header
        elif value == "attribute":
            mapping.attributes[re.sub(r"[^a-z0-9_]+", "_", header.lower()).strip("_") or "attribute"] = header
        elif value in FIELD_CHOICES:
            setattr(mapping, value, header)
    staged = imports.StagedFile(
        path=path,
        sha256=staged_name[:64],
        size=path.stat().st_size,
        filename=str(form.get("filename", path.name))[:255],
    )
    try:
        planned = imports.create_job(
            ctx.session,
            source_id=int_or_none(str(form.get("source_id", "")), field="source_id") or 0,
            staged=staged,
            mapping=mapping,
            dry_run=form.get("mode") == "dry_run",
            force=form.get("force") == "1",
        )
    except ZgodaError as error:
        ctx.session.rollback()
        return _history(request, ctx, error=error.detail, status_code=422)
    if planned.job.status == "queued":
        enqueue_after_commit(ctx.session, run_import, planned.job.id)
    return RedirectResponse(f"/w/{slug}/imports/{planned.job.id}", status_code=303)


@router.get("/w/{slug}/imports/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, slug: str, job_id: int, ctx: RequestContext = require("imports.read")) -> Response:
    job = imports.get_job(ctx.session, job_id=job_id)
    report = imports.report(ctx.session, job)
    source = sources.get_source(ctx.session, source_id=job.source_id)
    template = "imports/progress.html" if request.headers.get("hx-request") else "imports/job.html"
    return render(request, template, ctx, job=job, report=report, source=source, staged_name=Path(job.stored_path).name)


@router.post("/w/{slug}/imports/{job_id}/cancel")
def cancel(slug: str, job_id: int, ctx: RequestContext = require("imports.run")) -> Response:
    imports.cancel_job(ctx.session, job_id=job_id)
    return RedirectResponse(f"/w/{slug}/imports/{job_id}", status_code=303)


@router.post("/w/{slug}/imports/{job_id}/resume")
def resume(slug: str, job_id: int, ctx: RequestContext = require("imports.run")) -> Response:
    job = imports.get_job(ctx.session, job_id=job_id)
    if job.status == "failed":
        job.status = "queued"
        enqueue_after_commit(ctx.session, run_import, job.id)
    return RedirectResponse(f"/w/{slug}/imports/{job_id}", status_code=303)


@router.post("/w/{slug}/imports/{job_id}/run-for-real")
def run_for_real(slug: str, job_id: int, ctx: RequestContext = require("imports.run")) -> Response:
    """After a dry run: the same file and mapping, for real."""
    dry = imports.get_job(ctx.session, job_id=job_id)
    if not dry.dry_run:
        raise InvalidInput("This import already ran for real.", field="job_id")
    staged = imports.StagedFile(
        path=Path(dry.stored_path), sha256=dry.file_sha256, size=dry.size_bytes, filename=dry.filename
    )
    planned = imports.create_job(
        ctx.session,
        source_id=dry.source_id,
        staged=staged,
        mapping=ColumnMapping.from_json(dry.mapping),
        file_format=dry.format,
        encoding=dry.encoding,
        delimiter=dry.delimiter,
    )
    if planned.job.status == "queued":
        enqueue_after_commit(ctx.session, run_import, planned.job.id)
    return RedirectResponse(f"/w/{slug}/imports/{planned.job.id}", status_code=303)
