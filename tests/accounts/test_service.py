"""Users, workspaces, memberships and tokens through the service layer."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.support.factories import PASSWORD, as_system, make_member, make_user, make_workspace
from zgoda.accounts import service as accounts
from zgoda.accounts.models import ApiToken, Membership
from zgoda.accounts.roles import Role, role_allows
from zgoda.audit.models import AuditEntry
from zgoda.core.errors import Conflict, InvalidInput


def test_passwords_are_stored_as_argon2_hashes(session: Session) -> None:
    user = make_user(session)
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


@pytest.mark.parametrize(
    ("email", "password", "field"),
    [("not-an-address", "long-enough-pass", "email"), ("ok@example.com", "short", "password")],
)
def test_bad_user_input_names_the_field(session: Session, email: str, password: str, field: str) -> None:
    as_system(session)
    with pytest.raises(InvalidInput) as error:
        accounts.create_user(session, email=email, password=password)
    assert error.value.field == field


def test_duplicate_users_and_slugs_conflict(session: Session) -> None:
    user = make_user(session)
    with pytest.raises(Conflict):
        accounts.create_user(session, email=user.email.upper(), password=PASSWORD)
    workspace = make_workspace(session)
    with pytest.raises(Conflict):
        accounts.create_workspace(session, slug=workspace.slug, name="Again")


@pytest.mark.parametrize("slug", ["", "Has Space", "-edge", "edge-", "ą-polish", "x" * 64])
def test_bad_slugs_are_refused(session: Session, slug: str) -> None:
    as_system(session)
    with pytest.raises(InvalidInput) as error:
        accounts.create_workspace(session, slug=slug, name="Name")
    assert error.value.field == "slug"


def test_the_last_owner_cannot_be_removed(session: Session) -> None:
    workspace = make_workspace(session)
    make_member(session, workspace, Role.OWNER)
    as_system(session, workspace)
    owner = session.scalars(select(Membership).where(Membership.workspace_id == workspace.id)).one()
    with pytest.raises(Conflict, match="last owner"):
        accounts.remove_member(session, member_id=owner.id)
    make_member(session, workspace, Role.OWNER)
    as_system(session, workspace)
    accounts.remove_member(session, member_id=owner.id)
    assert session.get(Membership, owner.id) is None


def test_tokens_are_stored_hashed_resolved_and_revoked(session: Session) -> None:
    workspace = make_workspace(session)
    as_system(session, workspace)
    issued = accounts.create_api_token(session, name="shop", role=Role.OPERATOR)
    stored = session.scalars(select(ApiToken)).one()
    assert issued.plaintext.startswith("zgk_")
    assert issued.plaintext not in (stored.token_hash, stored.display_prefix)
    assert accounts.resolve_api_token(session, issued.plaintext) is stored
    assert accounts.resolve_api_token(session, issued.plaintext + "x") is None
    accounts.revoke_api_token(session, token_id=stored.id)
    assert accounts.resolve_api_token(session, issued.plaintext) is None


def test_membership_changes_are_audited_in_the_workspace(session: Session) -> None:
    workspace = make_workspace(session)
    user = make_member(session, workspace, Role.OPERATOR)
    as_system(session, workspace)
    entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "member.add")).one()
    assert entry.summary["after"] == {"user_id": user.id, "email": user.email, "role": "operator"}


def test_role_table() -> None:
    assert role_allows(Role.OWNER, "members.manage")
    assert not role_allows(Role.OPERATOR, "members.manage")
    assert role_allows(Role.VIEWER, "audit.read")
    with pytest.raises(KeyError):
        role_allows(Role.OWNER, "no.such.permission")
