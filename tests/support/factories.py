"""Test data, made through the services so every row is as real as production's."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from sqlalchemy.orm import Session

from zgoda.accounts import service as accounts
from zgoda.accounts.models import User, Workspace
from zgoda.accounts.roles import Role
from zgoda.core.tenancy import Actor, bind_scope

PASSWORD = "correct-horse-battery"
_counter = itertools.count(1)


def as_system(session: Session, workspace: Workspace | None = None) -> Session:
    bind_scope(session, workspace_id=workspace.id if workspace else None, actor=Actor.system("test"))
    return session


def make_workspace(session: Session, *, slug: str | None = None, name: str | None = None) -> Workspace:
    number = next(_counter)
    as_system(session)
    return accounts.create_workspace(
        session, slug=slug or f"ws-{number}-{id(session) % 10000}", name=name or f"Workspace {number}"
    )


def make_user(session: Session, *, email: str | None = None, password: str = PASSWORD, admin: bool = False) -> User:
    number = next(_counter)
    as_system(session)
    return accounts.create_user(
        session,
        email=email or f"user{number}-{id(session) % 10000}@staff.example.com",
        password=password,
        name=f"User {number}",
        is_platform_admin=admin,
    )


def make_member(session: Session, workspace: Workspace, role: Role | str, *, email: str | None = None) -> User:
    user = make_user(session, email=email)
    as_system(session)
    accounts.add_member(session, workspace=workspace, user=user, role=role)
    return user


def make_token(session: Session, workspace: Workspace, role: Role | str = Role.OPERATOR, name: str = "test") -> str:
    as_system(session, workspace)
    return accounts.create_api_token(session, name=name, role=role).plaintext


@dataclass
class TenantPair:
    """Two workspaces with one member of every role and one token of every role each."""

    a: Workspace
    b: Workspace
    users_a: dict[Role, User]
    users_b: dict[Role, User]
    tokens_a: dict[Role, str]
    tokens_b: dict[Role, str]


def make_tenant_pair(session: Session) -> TenantPair:
    a = make_workspace(session, name="Alpha Sp. z o.o.")
    b = make_workspace(session, name="Bravo SECRET-B-MARKER")
    users_a = {role: make_member(session, a, role) for role in Role}
    users_b = {role: make_member(session, b, role) for role in Role}
    tokens_a = {role: make_token(session, a, role, name=f"a-{role.value}") for role in Role}
    tokens_b = {role: make_token(session, b, role, name=f"b-{role.value} SECRET-B-MARKER") for role in Role}
    session.commit()
    return TenantPair(a=a, b=b, users_a=users_a, users_b=users_b, tokens_a=tokens_a, tokens_b=tokens_b)
