"""Tenancy fails closed: no workspace, no tenant rows; another workspace's rows are invisible."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.support.factories import as_system, make_token, make_workspace
from zgoda.accounts.models import ApiToken
from zgoda.core.errors import TenancyError
from zgoda.core.tenancy import Actor, bind_scope, unscoped


def test_a_tenant_query_without_a_workspace_raises(session: Session) -> None:
    as_system(session)  # scope bound, but no workspace
    with pytest.raises(TenancyError):
        session.scalars(select(ApiToken)).all()


def test_a_tenant_query_with_no_scope_at_all_raises(session: Session) -> None:
    with pytest.raises(TenancyError):
        session.scalar(select(func.count()).select_from(ApiToken))


def test_queries_see_only_the_bound_workspace(session: Session) -> None:
    a, b = make_workspace(session), make_workspace(session)
    make_token(session, a, name="token-a")
    make_token(session, b, name="token-b")
    bind_scope(session, workspace_id=a.id, actor=Actor.system())
    assert session.scalars(select(ApiToken.name)).all() == ["token-a"]
    assert session.scalar(select(func.count()).select_from(ApiToken)) == 1
    # even asking for B's rows by id returns nothing
    b_token = session.execute(select(ApiToken.id).where(ApiToken.workspace_id == b.id)).first()
    assert b_token is None
    with unscoped(session):
        assert sorted(session.scalars(select(ApiToken.name)).all()) == ["token-a", "token-b"]


def test_writing_a_row_into_another_workspace_raises(session: Session) -> None:
    a, b = make_workspace(session), make_workspace(session)
    as_system(session, a)
    session.add(ApiToken(workspace_id=b.id, name="smuggled", role="owner", token_hash="x" * 64, display_prefix="x"))
    with pytest.raises(TenancyError):
        session.flush()


def test_new_rows_take_the_bound_workspace(session: Session) -> None:
    a = make_workspace(session)
    as_system(session, a)
    token = ApiToken(name="stamped", role="viewer", token_hash="y" * 64, display_prefix="y")
    session.add(token)
    session.flush()
    assert token.workspace_id == a.id
