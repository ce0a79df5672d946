"""The audit chain: appended in order, refused UPDATE/DELETE by the database, tampering named."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from tests.support.factories import as_system, make_workspace
from zgoda.accounts.models import Workspace
from zgoda.audit import service as audit
from zgoda.audit.models import AuditEntry
from zgoda.core.chain import GENESIS_HASH, chain_payload, drop_append_only_ddl, entry_hash


def _workspace_with_entries(session: Session, count: int = 5) -> Workspace:
    workspace = make_workspace(session)
    as_system(session, workspace)
    for number in range(count):
        audit.record(session, action="test.step", object_type="thing", object_id=number, summary={"n": number})
    session.flush()
    return workspace


def _entries(session: Session, workspace: Workspace) -> list[AuditEntry]:
    as_system(session, workspace)
    return list(session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))


def _drop_triggers(session: Session) -> None:
    for statement in drop_append_only_ddl("audit_entries", session.get_bind().dialect.name):
        session.execute(text(statement))


def test_entries_are_numbered_and_linked(session: Session) -> None:
    workspace = _workspace_with_entries(session)
    entries = _entries(session, workspace)
    # workspace.create went to the platform chain; these are the five test steps
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.hash
    recomputed = entry_hash(
        entries[2].prev_hash,
        chain_payload(AuditEntry, {c: getattr(entries[2], c) for c in (*AuditEntry.chain_fields, "seq")}),
    )
    assert recomputed == entries[2].hash
    report = audit.verify_workspace(session, workspace_id=workspace.id)
    assert report.ok and report.entries == 5 and report.head_hash == entries[-1].hash


def test_the_database_refuses_update(session: Session) -> None:
    workspace = _workspace_with_entries(session, 1)
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(
            update(AuditEntry).where(AuditEntry.workspace_id == workspace.id).values(action="forged"),
            execution_options={"synchronize_session": False},
        )


def test_the_database_refuses_delete(session: Session) -> None:
    workspace = _workspace_with_entries(session, 1)
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text("DELETE FROM audit_entries WHERE workspace_id = :w"), {"w": workspace.id})


def test_verify_names_a_changed_entry(session: Session) -> None:
    workspace = _workspace_with_entries(session)
    _drop_triggers(session)
    session.execute(
        text("UPDATE audit_entries SET summary = :s WHERE workspace_id = :w AND seq = 3"),
        {"s": '{"n": 99}', "w": workspace.id},
    )
    report = audit.verify_workspace(session, workspace_id=workspace.id)
    assert not report.ok
    assert report.problem is not None and report.problem.seq == 3
    assert "altered" in report.problem.reason


def test_verify_names_a_deleted_entry(session: Session) -> None:
    workspace = _workspace_with_entries(session)
    _drop_triggers(session)
    session.execute(text("DELETE FROM audit_entries WHERE workspace_id = :w AND seq = 2"), {"w": workspace.id})
    report = audit.verify_workspace(session, workspace_id=workspace.id)
    assert report.problem is not None
    assert report.problem.seq == 3 and "#2 is missing" in report.problem.reason


def test_verify_names_a_deleted_and_renumbered_entry(session: Session) -> None:
    workspace = _workspace_with_entries(session)
    _drop_triggers(session)
    session.execute(text("DELETE FROM audit_entries WHERE workspace_id = :w AND seq = 2"), {"w": workspace.id})
    for seq in (3, 4, 5):
        session.execute(
            text("UPDATE audit_entries SET seq = :n WHERE workspace_id = :w AND seq = :s"),
            {"n": seq - 1, "w": workspace.id, "s": seq},
        )
    report = audit.verify_workspace(session, workspace_id=workspace.id)
    assert report.problem is not None and report.problem.seq == 2
    assert "does not follow" in report.problem.reason


def test_verify_names_reordered_entries(session: Session) -> None:
    workspace = _workspace_with_entries(session)
    _drop_triggers(session)
    params = {"w": workspace.id}
    session.execute(text("UPDATE audit_entries SET seq = 1000 WHERE workspace_id = :w AND seq = 3"), params)
    session.execute(text("UPDATE audit_entries SET seq = 3 WHERE workspace_id = :w AND seq = 4"), params)
    session.execute(text("UPDATE audit_entries SET seq = 4 WHERE workspace_id = :w AND seq = 1000"), params)
    report = audit.verify_workspace(session, workspace_id=workspace.id)
    assert report.problem is not None and report.problem.seq == 3


def test_a_broken_chain_does_not_hide_other_workspaces(session: Session) -> None:
    broken = _workspace_with_entries(session)
    intact = _workspace_with_entries(session)
    _drop_triggers(session)
    session.execute(
        text("UPDATE audit_entries SET actor = 'someone else' WHERE workspace_id = :w AND seq = 1"), {"w": broken.id}
    )
    reports = {r.chain_key: r for r in audit.verify_all(session)}
    assert not reports[broken.id].ok and reports[broken.id].problem.seq == 1  # type: ignore[union-attr]
    assert reports[intact.id].ok and reports[intact.id].entries == 5


def test_summaries_survive_the_round_trip_with_unicode(session: Session) -> None:
    workspace = make_workspace(session)
    as_system(session, workspace)
    audit.record(session, action="test.unicode", summary={"name": "Zażółć gęślą jaźń", "nested": {"b": 1, "a": [2]}})
    session.commit()
    session.expire_all()
    assert audit.verify_workspace(session, workspace_id=workspace.id).ok
