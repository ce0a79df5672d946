"""Recording and reading the audit log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zgoda.audit.models import AuditEntry, PlatformAuditEntry
from zgoda.core.chain import ChainReport, append_entries, verify_chain
from zgoda.core.clock import utcnow
from zgoda.core.tenancy import current_scope, unscoped


def record(
    session: Session,
    *,
    action: str,
    object_type: str | None = None,
    object_id: object | None = None,
    summary: dict[str, Any] | None = None,
    platform: bool = False,
    workspace_id: int | None = None,
) -> AuditEntry | PlatformAuditEntry:
    """Append one entry for the session's actor to its workspace's chain (or the platform's).

    ``workspace_id`` names another workspace's chain explicitly, for platform-level code
    (the CLI, workspace creation) acting on a workspace it is not scoped to.

    ``summary`` holds before/after values of what changed; callers keep subjects'
    personal data out of it (ids only), so an erasure never has to touch the log.
    """
    scope = current_scope(session)
    actor = scope.actor
    values: dict[str, Any] = {
        "occurred_at": utcnow(),
        "actor": actor.label,
        "actor_user_id": actor.user_id,
        "actor_role": actor.role,
        "via": actor.via,
        "action": action,
        "object_type": object_type,
        "object_id": None if object_id is None else str(object_id),
        "summary": summary or {},
        "ip": actor.ip,
    }
    entry: AuditEntry | PlatformAuditEntry
    target = workspace_id if workspace_id is not None else scope.workspace_id
    if platform or target is None:
        entry = PlatformAuditEntry(**values)
        append_entries(session, [entry], chain_key=None)
    elif target == scope.workspace_id:
        entry = AuditEntry(workspace_id=target, **values)
        append_entries(session, [entry], chain_key=target)
    else:
        entry = AuditEntry(workspace_id=target, **values)
        with unscoped(session):
            append_entries(session, [entry], chain_key=target)
    return entry


def list_entries(
    session: Session,
    *,
    before_seq: int | None = None,
    limit: int = 50,
    action_prefix: str | None = None,
    actor: str | None = None,
) -> Sequence[AuditEntry]:
    """The workspace's entries, newest first, optionally filtered."""
    statement = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit)
    if before_seq is not None:
        statement = statement.where(AuditEntry.seq < before_seq)
    if action_prefix:  # matched literally: autoescape makes "_" and "%" plain characters
        statement = statement.where(AuditEntry.action.startswith(action_prefix, autoescape=True))
    if actor:
        statement = statement.where(AuditEntry.actor.contains(actor, autoescape=True))
    return session.scalars(statement).all()


def get_entry(session: Session, *, entry_id: int) -> AuditEntry | None:
    return session.scalars(select(AuditEntry).where(AuditEntry.id == entry_id)).first()


def count_entries(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(AuditEntry)) or 0


def verify_workspace(session: Session, *, workspace_id: int) -> ChainReport:
    """Check the given workspace's audit chain."""
    return verify_chain(session, AuditEntry, chain_key=workspace_id, all_chains=False)[0]


def verify_all(session: Session) -> list[ChainReport]:
    """Check every workspace's audit chain and the platform chain."""
    reports = verify_chain(session, AuditEntry)
    reports.extend(verify_chain(session, PlatformAuditEntry))
    return reports
