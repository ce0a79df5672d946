"""JSON API: file imports as background jobs, and the synchronous contacts batch endpoint."""

from __future__ import annotations

import io
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse

from zgoda.consent import sources
from zgoda.contacts.imports import service as imports
from zgoda.contacts.imports.mapping import ColumnMapping
from zgoda.contacts.imports.tasks import run_import
from zgoda.core.csvsafe import write_csv
from zgoda.core.errors import Conflict, InvalidInput
from zgoda.core.tasks import enqueue_after_commit
from zgoda.web.context import RequestContext, request_body, require

router = APIRouter(tags=["imports"])
MAX_BATCH_RECORDS = 10_000
MAX_BATCH_BYTES = 10 * 1024 * 1024


def _source_id(ctx: RequestContext, source: str) -> int:
    if source.isdigit():
        return sources.get_source(ctx.session, source_id=int(source), field="source").id
    return sources.source_by_name(ctx.session, source).id


def _mapping(raw: str | None) -> ColumnMapping | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"The mapping is not valid JSON: {error}", field="mapping") from error
    if not isinstance(data, dict):
        raise InvalidInput("The mapping must be a JSON object.", field="mapping")
    return ColumnMapping.from_json(data)


def _planned(planned: imports.PlannedJob, ctx: RequestContext) -> dict[str, Any]:
    return {**imports.report(ctx.session, planned.job), "mapped": planned.mapped, "ignored": planned.ignored}


@router.post("/imports", status_code=202)
def start_import(
    file: Annotated[UploadFile, File(description="CSV, XLSX or JSON Lines")],
    source: Annotated[str, Form(max_length=120, description="Source name or id")],
    mapping: Annotated[str | None, Form(max_length=20_000, description="JSON mapping; default saved/automatic")] = None,
    dry_run: Annotated[bool, Form()] = False,
    file_format: Annotated[str | None, Form(alias="format", max_length=8)] = None,
    encoding: Annotated[str | None, Form(max_length=16)] = None,
    delimiter: Annotated[str | None, Form(max_length=3)] = None,
    force: Annotated[bool, Form()] = False,
    ctx: RequestContext = require("imports.run"),
) -> dict[str, Any]:
    """Stage the file and queue the import (or the dry run); poll GET /imports/{id} for progress and the report."""
    source_id = _source_id(ctx, source)
    staged = imports.stage_file(file.file, filename=file.filename or "upload", data_dir=ctx.settings.data_dir)
    planned = imports.create_job(
        ctx.session,
        source_id=source_id,
        staged=staged,
        mapping=_mapping(mapping),
        dry_run=dry_run,
        file_format=file_format,
        encoding=encoding,
        delimiter="\t" if delimiter == "tab" else delimiter,
        force=force,
    )
    if planned.job.status == "queued":
        enqueue_after_commit(ctx.session, run_import, planned.job.id)
    return _planned(planned, ctx)


@router.get("/imports")
def list_imports(
    ctx: RequestContext = require("imports.read"),
    source_id: Annotated[int | None, Query(ge=1)] = None,
) -> list[dict[str, Any]]:
    """Import history, newest first, each with its counts."""
    return [
        imports.report(ctx.session, job) | {"rejected": []}
        for job in imports.list_jobs(ctx.session, source_id=source_id)
    ]


@router.get("/imports/{job_id}")
def get_import(job_id: int, ctx: RequestContext = require("imports.read")) -> dict[str, Any]:
    """Status, progress (rows done of the estimate), counts and the first rejected rows."""
    return imports.report(ctx.session, imports.get_job(ctx.session, job_id=job_id))


@router.post("/imports/{job_id}/cancel")
def cancel_import(job_id: int, ctx: RequestContext = require("imports.run")) -> dict[str, Any]:
    """Stop after the current batch; committed batches stay."""
    return imports.report(ctx.session, imports.cancel_job(ctx.session, job_id=job_id))


@router.post("/imports/{job_id}/resume", status_code=202)
def resume_import(job_id: int, ctx: RequestContext = require("imports.run")) -> dict[str, Any]:
    """Queue a failed import again; it continues after its last committed batch."""
    job = imports.get_job(ctx.session, job_id=job_id)
    if job.status != "failed":
        raise Conflict(f"Only a failed import can be resumed; this one is {job.status}.", field="job_id")
    job.status = "queued"
    enqueue_after_commit(ctx.session, run_import, job.id)
    return imports.report(ctx.session, job)


@router.post("/contacts:batch")
def contacts_batch(
    request: Request,
    source: Annotated[str, Query(max_length=120, description="Source name or id the records come from")],
    dry_run: Annotated[bool, Query()] = False,
    body: bytes = Depends(request_body),
    ctx: RequestContext = require("imports.run"),
) -> JSONResponse:
    """Up to 10,000 records (a JSON array, or JSON Lines with Content-Type application/x-ndjson, at most 10 MB)
    imported at once with the same rules and report as a file; record keys are column names."""
    if len(body) > MAX_BATCH_BYTES:
        raise InvalidInput(f"A batch is at most {MAX_BATCH_BYTES // (1024 * 1024)} MB.", field="body")
    lines = _batch_lines(body, request.headers.get("content-type", ""))
    source_id = _source_id(ctx, source)
    staged = imports.stage_file(io.BytesIO(lines), filename="batch.jsonl", data_dir=ctx.settings.data_dir)
    planned = imports.create_job(ctx.session, source_id=source_id, staged=staged, dry_run=dry_run, force=True)
    ctx.session.commit()
    job = imports.run_job(request.app.state.database, planned.job.id, region=ctx.settings.default_phone_region)
    ctx.session.expire_all()
    result = {
        **imports.report(ctx.session, imports.get_job(ctx.session, job_id=job.id)),
        "mapped": planned.mapped,
        "ignored": planned.ignored,
    }
    return JSONResponse(json.loads(json.dumps(result, default=str)), status_code=200)


def _batch_lines(body: bytes, content_type: str) -> bytes:
    """Normalise the body to JSON Lines, checking it is records."""
    if not body.strip():
        raise InvalidInput("The batch is empty.", field="body")
    if "ndjson" in content_type or "jsonl" in content_type:
        count = sum(1 for line in body.splitlines() if line.strip())
        if count > MAX_BATCH_RECORDS:
            raise InvalidInput(f"A batch holds at most {MAX_BATCH_RECORDS} records.", field="body")
        return body
    try:
        records = json.loads(body)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"Malformed JSON: {error}", field="body") from error
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InvalidInput("The batch must be a JSON array of objects.", field="body")
    if len(records) > MAX_BATCH_RECORDS:
        raise InvalidInput(f"A batch holds at most {MAX_BATCH_RECORDS} records.", field="body")
    if not records:
        raise InvalidInput("The batch is empty.", field="body")
    keys: list[str] = []
    for record in records:
        keys += [k for k in record if k not in keys]
    first = {key: records[0].get(key) for key in keys}  # the first line defines the columns
    rest = records[1:]
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in [first, *rest]).encode() + b"\n"


@router.get("/imports/{job_id}/rejected.csv", response_class=PlainTextResponse)
def rejected_csv(job_id: int, ctx: RequestContext = require("imports.read")) -> PlainTextResponse:
    """Every rejected row (row, column, reason) as CSV, formula-safe for spreadsheets."""
    job = imports.get_job(ctx.session, job_id=job_id)
    rows = imports.list_rejections(ctx.session, job_id=job.id, limit=imports.MAX_STORED_REJECTIONS)
    body = write_csv(["row", "column", "reason"], ([r.row, r.field, r.reason] for r in rows))
    return PlainTextResponse(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{job.id}-rejected.csv"'},
    )
