"""The audit page: everything every operator did, visible to the owner (and read-only to all)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from zgoda.audit import service
from zgoda.web.context import RequestContext, require
from zgoda.web.templating import render

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50


@router.get("/w/{slug}/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    slug: str,
    ctx: RequestContext = require("audit.read"),
    before: Annotated[int | None, Query(ge=1)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    entries = service.list_entries(
        ctx.session, before_seq=before, limit=PAGE_SIZE, action_prefix=action or None, actor=actor or None
    )
    template = "audit/rows.html" if request.headers.get("hx-request") else "audit/audit.html"
    return render(request, template, ctx, entries=entries, action=action or "", actor=actor or "", page_size=PAGE_SIZE)


@router.get("/w/{slug}/audit/verify", response_class=HTMLResponse)
def audit_verify(request: Request, slug: str, ctx: RequestContext = require("audit.read")) -> Response:
    report = service.verify_workspace(ctx.session, workspace_id=ctx.workspace_required.id)
    return render(request, "audit/verify.html", ctx, report=report)
