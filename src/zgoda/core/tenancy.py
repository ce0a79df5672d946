"""Tenancy that fails closed.

Each request, task or command binds a :class:`Scope` (workspace and actor) to its
session once. Every ORM query that touches a tenant model is then filtered to that
workspace; a tenant query with no workspace bound raises :class:`TenancyError`
instead of returning every client's rows. Platform-level code (verification, the
platform admin) opts out explicitly with :func:`unscoped`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

from sqlalchemy import ForeignKey, ForeignKeyConstraint, Index, Table, event
from sqlalchemy.orm import (
    Mapped,
    ORMExecuteState,
    Session,
    UOWTransaction,
    declared_attr,
    mapped_column,
    with_loader_criteria,
)
from sqlalchemy.sql import ClauseElement, visitors

from zgoda.core.errors import TenancyError

_T = TypeVar("_T")


class TenantMixin:
    """Marks a model as tenant data: it belongs to exactly one workspace.

    ``workspace_id`` gets an index of its own unless the model sets ``workspace_index = False`` (when
    another index already starts with ``workspace_id``, or no query looks rows up by workspace alone),
    and a foreign key to ``workspaces`` unless the model sets ``workspace_foreign_key = False``: only
    where a composite foreign key with ``workspace_id`` in it (see :func:`same_workspace_key`) already
    proves the workspace exists.
    """

    workspace_index: ClassVar[bool] = True
    workspace_foreign_key: ClassVar[bool] = True

    @declared_attr
    def workspace_id(cls) -> Mapped[int]:  # noqa: N805 - SQLAlchemy declared_attr takes the class
        if not cls.workspace_foreign_key:
            return mapped_column(index=cls.workspace_index)
        return mapped_column(ForeignKey("workspaces.id", ondelete="RESTRICT"), index=cls.workspace_index)


def same_workspace_key(column: str, table: str) -> ForeignKeyConstraint:
    """A foreign key on (``column``, ``workspace_id``) to ``table``'s (``id``, ``workspace_id``): the row
    it names must exist *and belong to the same workspace*, which the database itself then enforces.
    ``table`` needs a unique index on (id, workspace_id) (:func:`workspace_key_index`)."""
    return ForeignKeyConstraint([column, "workspace_id"], [f"{table}.id", f"{table}.workspace_id"], ondelete="RESTRICT")


def workspace_key_index(table: str) -> Index:
    """The unique index on (id, workspace_id) that :func:`same_workspace_key` references."""
    return Index(f"ix_{table}_id_workspace", "id", "workspace_id", unique=True)


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user, an API token, the CLI or the system itself."""

    label: str
    via: str  # "ui", "api", "cli", "system", "public"
    user_id: int | None = None
    role: str | None = None
    ip: str | None = None

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(label=label, via="system")


@dataclass(frozen=True)
class Scope:
    workspace_id: int | None
    actor: Actor


def bind_scope(session: Session, *, workspace_id: int | None, actor: Actor) -> None:
    """Set the workspace and actor for everything this session does from now on."""
    session.info["scope"] = Scope(workspace_id=workspace_id, actor=actor)


def current_scope(session: Session) -> Scope:
    scope = session.info.get("scope")
    if scope is None:
        raise TenancyError("no scope bound to this session: call bind_scope() first")
    assert isinstance(scope, Scope)
    return scope


def current_workspace_id(session: Session) -> int:
    """The bound workspace; raises when the session works outside any workspace."""
    workspace_id = current_scope(session).workspace_id
    if workspace_id is None:
        raise TenancyError("this session has no workspace bound")
    return workspace_id


def current_actor(session: Session) -> Actor:
    return current_scope(session).actor


@contextmanager
def unscoped(session: Session) -> Iterator[Session]:
    """Let platform code read across workspaces for the duration of the block."""
    previous = session.info.get("unscoped", False)
    session.info["unscoped"] = True
    try:
        yield session
    finally:
        session.info["unscoped"] = previous


def _scoped_workspace(session: Session) -> int | None:
    if session.info.get("unscoped"):
        return None
    scope = session.info.get("scope")
    workspace_id = scope.workspace_id if isinstance(scope, Scope) else None
    if workspace_id is None:
        raise TenancyError("tenant data queried with no workspace in scope")
    return workspace_id


def tenant_table_names() -> frozenset[str]:
    """Names of every table whose model is tenant data (computed once mappers are configured)."""
    global _TENANT_TABLES
    if _TENANT_TABLES is None:
        from zgoda.core.db import Base

        _TENANT_TABLES = frozenset(
            mapper.local_table.name
            for mapper in Base.registry.mappers
            if issubclass(mapper.class_, TenantMixin) and isinstance(mapper.local_table, Table)
        )
    return _TENANT_TABLES


_TENANT_TABLES: frozenset[str] | None = None


def _touches_tenant_tables(state: ORMExecuteState) -> bool:
    if any(issubclass(mapper.class_, TenantMixin) for mapper in state.all_mappers):
        return True
    names = tenant_table_names()
    return any(
        isinstance(node, Table) and node.name in names
        for node in visitors.iterate(cast(ClauseElement, state.statement))
    )


@event.listens_for(Session, "do_orm_execute")
def _filter_tenant_queries(state: ORMExecuteState) -> None:
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.is_column_load or state.is_relationship_load:
        return
    if not _touches_tenant_tables(state):
        return
    workspace_id = _scoped_workspace(state.session)
    if workspace_id is None:
        return
    state.statement = state.statement.options(
        with_loader_criteria(
            TenantMixin,
            lambda cls: cls.workspace_id == workspace_id,
            include_aliases=True,
        )
    )


@event.listens_for(Session, "before_flush")
def _stamp_new_tenant_rows(session: Session, _flush: UOWTransaction, _instances: Any) -> None:
    for obj in session.new:
        if not isinstance(obj, TenantMixin):
            continue
        if session.info.get("unscoped"):
            if obj.workspace_id is None:
                raise TenancyError(f"{type(obj).__name__} created without a workspace")
            continue
        workspace_id = _scoped_workspace(session)
        if obj.workspace_id is None:
            obj.workspace_id = workspace_id
        elif obj.workspace_id != workspace_id:
            raise TenancyError(f"{type(obj).__name__} written into another workspace")
    for obj in session.dirty:
        if (
            isinstance(obj, TenantMixin)
            and not session.info.get("unscoped")
            and obj.workspace_id != _scoped_workspace(session)
        ):
            raise TenancyError(f"{type(obj).__name__} of another workspace modified")


def get_scoped(session: Session, model: type[_T], ident: Any) -> _T | None:
    """``session.get`` for a tenant model that also checks the workspace.

    ``Session.get`` answers from the identity map without a query when the row is already loaded,
    so the tenant filter never sees it; this closes that gap for sessions that change scope.
    """
    obj = session.get(model, ident)
    if obj is None or getattr(obj, "workspace_id", None) != current_workspace_id(session):
        return None
    return obj
