"""JSON API: read the workspace's audit log and check its chain."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from zgoda.audit import service
from zgoda.audit.schemas import AuditEntryOut, ChainStatus
from zgoda.core.chain import ChainReport
from zgoda.core.errors import NotFound
from zgoda.web.context import RequestContext, require

router = APIRouter(tags=["audit"])


def chain_status(report: ChainReport) -> ChainStatus:
    return ChainStatus(
        chain=report.chain,
        entries=report.entries,
        head_hash=report.head_hash,
        ok=report.ok,
        first_bad_seq=report.problem.seq if report.problem else None,
        problem=report.problem.reason if report.problem else None,
    )


@router.get("/audit", response_model=list[AuditEntryOut])
def list_audit(
    ctx: RequestContext = require("audit.read"),
    before_seq: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    action: Annotated[str | None, Query(max_length=64, description="Action prefix, e.g. `member.`")] = None,
) -> list[AuditEntryOut]:
    """Entries newest first; page with ``before_seq``."""
    entries = service.list_entries(ctx.session, before_seq=before_seq, limit=limit, action_prefix=action)
    return [AuditEntryOut.model_validate(e, from_attributes=True) for e in entries]


@router.get("/audit/verify", response_model=ChainStatus)
def verify_audit(ctx: RequestContext = require("audit.read")) -> ChainStatus:
    """Recompute this workspace's chain and report the first entry that does not match."""
    return chain_status(service.verify_workspace(ctx.session, workspace_id=ctx.workspace_required.id))


@router.get("/audit/{entry_id}", response_model=AuditEntryOut)
def get_audit_entry(entry_id: int, ctx: RequestContext = require("audit.read")) -> AuditEntryOut:
    entry = service.get_entry(ctx.session, entry_id=entry_id)
    if entry is None:
        raise NotFound("There is no such audit entry in this workspace.", field="entry_id")
    return AuditEntryOut.model_validate(entry, from_attributes=True)
